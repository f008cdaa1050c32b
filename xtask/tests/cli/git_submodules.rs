//! `cargo xtask git submodules list|status|update|reset|branch` on fixture repositories.

use crate::fixtures;

use fixtures::git_repos::GitFixture;

#[test]
fn list_shows_declared_submodules_with_urls() {
    let fixture = GitFixture::new();
    let report = fixture
        .xtask(&["--json", "git", "submodules", "list"])
        .assert_success()
        .json();
    let modules = report.as_array().unwrap();
    assert_eq!(modules.len(), 2);
    assert_eq!(modules[0]["name"], "vendor/a");
    assert_eq!(modules[0]["path"], "vendor/a");
    assert_eq!(
        modules[0]["url"].as_str().unwrap(),
        fixture.root().join("sub_a.git").to_str().unwrap()
    );
    assert_eq!(modules[1]["path"], "vendor/b");

    let status = fixture
        .xtask(&["--json", "git", "submodules", "status"])
        .assert_success()
        .json();
    assert_eq!(status[0]["state"], "detached");
    assert_eq!(status[1]["state"], "detached");
}

#[test]
fn unknown_submodule_lists_the_known_ones() {
    let fixture = GitFixture::new();
    for args in [
        &["git", "submodules", "update", "--name", "vendor/zzz"][..],
        &["git", "submodules", "reset", "--name", "vendor/zzz"][..],
        &["git", "submodules", "branch", "--name", "vendor/zzz"][..],
    ] {
        let run = fixture.xtask(args);
        run.assert_failure();
        assert!(
            run.stderr
                .contains("unknown submodule `vendor/zzz`; known submodules: vendor/a, vendor/b"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(run.stderr.contains("hint: "), "{}", run.stderr);
    }
}

#[test]
fn update_requires_all_or_a_name_and_checks_out_recorded_commits() {
    let fixture = GitFixture::new();
    let clone = fixture.clone_dir();
    let neither = fixture.xtask(&["git", "submodules", "update"]);
    neither.assert_failure();
    assert!(neither.stderr.contains("--all"), "{}", neither.stderr);

    fixture.git(
        &clone,
        &["submodule", "deinit", "--quiet", "--force", "vendor/a"],
    );
    fixture.git(
        &clone,
        &["submodule", "deinit", "--quiet", "--force", "vendor/b"],
    );
    let one = fixture
        .xtask(&[
            "--json",
            "git",
            "submodules",
            "update",
            "--name",
            "vendor/b",
        ])
        .assert_success()
        .json();
    let moved: Vec<&str> = one["moved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|module| module["path"].as_str().unwrap())
        .collect();
    assert_eq!(moved, ["vendor/b"]);
    assert!(
        !clone.join("vendor/a/lib.txt").exists(),
        "only vendor/b was updated"
    );
    assert!(clone.join("vendor/b/lib.txt").exists());

    let all = fixture.xtask(&["git", "submodules", "update", "--all"]);
    all.assert_success();
    assert!(all.stdout.contains("1 submodule moved"), "{}", all.stdout);
    assert!(clone.join("vendor/a/lib.txt").exists());
}

#[test]
fn reset_refuses_without_force_then_restores_the_recorded_commit() {
    let fixture = GitFixture::new();
    let clone = fixture.clone_dir();
    let sub = clone.join("vendor/a");
    let recorded = fixture.head(&sub);
    let stray = fixture.commit(&sub, "lib.txt", "local\n", "commit on a detached HEAD");
    std::fs::write(sub.join("lib.txt"), "dirty\n").unwrap();

    let refused = fixture.xtask(&["git", "submodules", "reset", "--name", "vendor/a"]);
    refused.assert_failure();
    assert!(
        refused.stderr.contains("uncommitted changes"),
        "{}",
        refused.stderr
    );
    assert!(
        refused
            .stderr
            .contains(&format!("commit {} which is on no branch", &stray[..7])),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    assert_eq!(fixture.head(&sub), stray);

    let reset = fixture
        .xtask(&[
            "--json",
            "git",
            "submodules",
            "reset",
            "--name",
            "vendor/a",
            "--force",
        ])
        .assert_success()
        .json();
    assert_eq!(reset["state"], "detached");
    assert_eq!(reset["commit"].as_str().unwrap(), recorded);
    assert_eq!(fixture.head(&sub), recorded);
    assert_eq!(
        std::fs::read_to_string(sub.join("lib.txt")).unwrap(),
        "a 1\n"
    );
}

#[test]
fn reset_of_a_clean_submodule_needs_no_confirmation() {
    let fixture = GitFixture::new();
    let clone = fixture.clone_dir();
    let sub = clone.join("vendor/b");
    let recorded = fixture.head(&sub);
    // Moving to a commit that a branch holds loses nothing.
    fixture.git(&sub, &["checkout", "--quiet", "origin/feature"]);
    let run = fixture.xtask(&["git", "submodules", "reset", "--name", "vendor/b"]);
    run.assert_success();
    assert!(
        run.stdout.contains("vendor/b reset to its recorded commit"),
        "{}",
        run.stdout
    );
    assert_eq!(fixture.head(&sub), recorded);
}

#[test]
fn branch_lists_then_switches_a_submodule_branch() {
    let fixture = GitFixture::new();
    let clone = fixture.clone_dir();
    let listed = fixture
        .xtask(&[
            "--json",
            "git",
            "submodules",
            "branch",
            "--name",
            "vendor/b",
        ])
        .assert_success()
        .json();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|branch| branch["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"main"), "{names:?}");
    assert!(names.contains(&"origin/feature"), "{names:?}");
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .all(|branch| branch["current"] == false));

    // `feature` exists only on the submodule's origin: a tracking branch is created.
    let switched = fixture
        .xtask(&[
            "--json",
            "git",
            "submodules",
            "branch",
            "--name",
            "vendor/b",
            "--branch",
            "feature",
        ])
        .assert_success()
        .json();
    assert_eq!(switched["branch"], "feature");
    assert_eq!(switched["state"], "modified");
    assert_eq!(
        fixture.git(&clone.join("vendor/b"), &["branch", "--show-current"]),
        "feature"
    );

    let human = fixture.xtask(&["git", "submodules", "branch", "--name", "vendor/b"]);
    human.assert_success();
    assert!(human.stdout.contains("* feature"), "{}", human.stdout);

    let back = fixture.xtask(&[
        "git",
        "submodules",
        "branch",
        "--name",
        "vendor/b",
        "--branch",
        "main",
    ]);
    back.assert_success();
    assert!(back.stdout.contains("vendor/b: on main"), "{}", back.stdout);
    assert!(
        back.stdout.contains("the recorded commit"),
        "{}",
        back.stdout
    );

    let missing = fixture.xtask(&[
        "git",
        "submodules",
        "branch",
        "--name",
        "vendor/b",
        "--branch",
        "nope",
    ]);
    missing.assert_failure();
    assert!(
        missing.stderr.contains("has no branch `nope`"),
        "{}",
        missing.stderr
    );
    assert!(
        missing.stderr.contains("origin/feature"),
        "{}",
        missing.stderr
    );
}

#[test]
fn branch_of_an_uninitialised_submodule_says_to_update_it() {
    let fixture = GitFixture::new();
    fixture.git(
        &fixture.clone_dir(),
        &["submodule", "deinit", "--quiet", "--force", "vendor/a"],
    );
    let run = fixture.xtask(&["git", "submodules", "branch", "--name", "vendor/a"]);
    run.assert_failure();
    assert!(run.stderr.contains("is not initialised"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("cargo xtask git submodules update --name vendor/a"),
        "{}",
        run.stderr
    );
}
