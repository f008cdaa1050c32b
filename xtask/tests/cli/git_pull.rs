//! `cargo xtask git pull` on fixture repositories: a fast-forward that moves a submodule, a
//! diverged branch that must not be merged, and a branch without an upstream.

use crate::fixtures;

use fixtures::git_repos::GitFixture;

#[test]
fn pull_fast_forwards_and_updates_submodules() {
    let fixture = GitFixture::new();
    let clone = fixture.clone_dir();
    let before = fixture.head(&clone);
    let old_a = fixture.head(&clone.join("vendor/a"));
    fixture.push_upstream("docs/guide.md", "guide\n", "add a guide");
    let new_a = fixture.advance_submodule_upstream("a");

    let report = fixture
        .xtask(&["--json", "git", "pull"])
        .assert_success()
        .json();
    assert_eq!(report["branch"], "main");
    assert_eq!(report["upstream"], "origin/main");
    assert_eq!(report["commits_pulled"], 2);
    assert_eq!(report["from"].as_str().unwrap(), before);
    assert_eq!(report["to"].as_str().unwrap(), fixture.head(&clone));
    assert_eq!(
        report["files_changed"],
        serde_json::json!(["docs/guide.md"])
    );
    assert_eq!(
        report["submodules_moved"],
        serde_json::json!([{ "path": "vendor/a", "from": old_a, "to": new_a }])
    );
    assert_eq!(fixture.head(&clone), fixture.head(&fixture.upstream_dir()));
    assert_eq!(
        fixture.head(&clone.join("vendor/a")),
        new_a,
        "submodule updated"
    );

    let again = fixture.xtask(&["git", "pull"]);
    again.assert_success();
    assert!(
        again.stdout.contains("main is up to date with origin/main"),
        "{}",
        again.stdout
    );
    assert!(
        again.stdout.contains("0 submodules moved"),
        "{}",
        again.stdout
    );
}

#[test]
fn pull_initialises_submodules_left_uninitialised() {
    let fixture = GitFixture::new();
    let clone = fixture.clone_dir();
    fixture.git(
        &clone,
        &["submodule", "deinit", "--quiet", "--force", "vendor/b"],
    );
    let run = fixture.xtask(&["git", "pull"]);
    run.assert_success();
    assert!(run.stdout.contains("1 submodule moved"), "{}", run.stdout);
    assert!(clone.join("vendor/b/lib.txt").is_file());
}

#[test]
fn diverged_pull_stops_with_the_fix_and_merges_nothing() {
    let fixture = GitFixture::new();
    let clone = fixture.clone_dir();
    fixture.push_upstream("theirs.txt", "theirs\n", "their commit");
    let local = fixture.commit(&clone, "mine.txt", "mine\n", "my commit");

    let run = fixture.xtask(&["git", "pull"]);
    run.assert_failure();
    assert!(run.stderr.contains("cannot fast-forward"), "{}", run.stderr);
    assert!(
        run.stderr.contains("1 commit that `origin/main` lacks"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("hint: "), "{}", run.stderr);
    assert!(
        run.stderr.contains("git rebase origin/main"),
        "{}",
        run.stderr
    );
    assert_eq!(fixture.head(&clone), local, "HEAD must not move");
    let parents = fixture.git(&clone, &["rev-list", "--parents", "-n", "1", "HEAD"]);
    assert_eq!(parents.split(' ').count(), 2, "no merge commit: {parents}");
}

#[test]
fn pull_without_upstream_says_how_to_set_one() {
    let fixture = GitFixture::new();
    let clone = fixture.clone_dir();
    fixture.git(&clone, &["switch", "--quiet", "-c", "local-only"]);
    let run = fixture.xtask(&["git", "pull"]);
    run.assert_failure();
    assert!(run.stderr.contains("has no upstream"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("git branch --set-upstream-to=origin/local-only"),
        "{}",
        run.stderr
    );
}

#[test]
fn pull_that_would_overwrite_local_changes_stops() {
    let fixture = GitFixture::new();
    let clone = fixture.clone_dir();
    fixture.push_upstream("README.md", "theirs\n", "edit readme upstream");
    std::fs::write(clone.join("README.md"), "mine\n").unwrap();
    let before = fixture.head(&clone);
    let run = fixture.xtask(&["git", "pull"]);
    run.assert_failure();
    assert!(run.stderr.contains("README.md"), "{}", run.stderr);
    assert!(
        run.stderr.contains("hint: commit or stash"),
        "{}",
        run.stderr
    );
    assert_eq!(fixture.head(&clone), before);
    assert_eq!(
        std::fs::read_to_string(clone.join("README.md")).unwrap(),
        "mine\n"
    );
}
