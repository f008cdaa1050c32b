//! `cargo xtask git sync` and `git clean` on fixture repositories: what would be lost is listed,
//! nothing happens without `--force` when stdin is not a terminal, and `--force` resets the
//! branch and the submodules.

use crate::fixtures;

use fixtures::git_repos::GitFixture;

/// A clone with an uncommitted change, an unpushed commit, an untracked file and a submodule
/// moved off its recorded commit; returns (unpushed commit, recorded commit of vendor/b).
fn diverge(fixture: &GitFixture) -> (String, String) {
    let clone = fixture.clone_dir();
    let unpushed = fixture.commit(&clone, "mine.txt", "mine\n", "unpushed work");
    std::fs::write(clone.join("README.md"), "edited\n").unwrap();
    std::fs::write(clone.join("scratch.txt"), "keep me\n").unwrap();
    let recorded_b = fixture.head(&clone.join("vendor/b"));
    fixture.git(
        &clone.join("vendor/b"),
        &["checkout", "--quiet", "origin/feature"],
    );
    (unpushed, recorded_b)
}

#[test]
fn sync_refuses_without_force_when_stdin_is_not_a_terminal() {
    let fixture = GitFixture::new();
    let clone = fixture.clone_dir();
    let (unpushed, _) = diverge(&fixture);

    let run = fixture.xtask(&["git", "sync"]);
    run.assert_failure();
    let stderr = &run.stderr;
    assert!(stderr.contains("uncommitted change  README.md"), "{stderr}");
    assert!(stderr.contains("unpushed work"), "{stderr}");
    assert!(stderr.contains("vendor/b"), "{stderr}");
    assert!(stderr.contains("stdin is not a terminal"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert!(
        !stderr.contains("scratch.txt"),
        "untracked files are not lost: {stderr}"
    );

    assert_eq!(fixture.head(&clone), unpushed, "nothing was reset");
    assert_eq!(
        std::fs::read_to_string(clone.join("README.md")).unwrap(),
        "edited\n"
    );
}

#[test]
fn sync_with_force_resets_to_origin_and_restores_submodules() {
    let fixture = GitFixture::new();
    let clone = fixture.clone_dir();
    let (unpushed, recorded_b) = diverge(&fixture);
    let upstream = fixture.push_upstream("upstream.txt", "u\n", "upstream moved on");

    let report = fixture
        .xtask(&["--json", "git", "sync", "--force"])
        .assert_success()
        .json();
    assert_eq!(report["branch"], "main");
    assert_eq!(report["target"], "origin/main");
    assert_eq!(report["commit"]["hash"].as_str().unwrap(), upstream);
    assert_eq!(
        report["discarded"]["uncommitted"],
        serde_json::json!(["README.md"])
    );
    assert_eq!(
        report["discarded"]["commits"][0]["hash"].as_str().unwrap(),
        unpushed
    );
    assert_eq!(report["discarded"]["submodules"][0]["path"], "vendor/b");
    assert_eq!(
        report["submodules_moved"],
        serde_json::json!([{
            "path": "vendor/b",
            "from": fixture.git(&fixture.sub_work("b"), &["rev-parse", "feature"]),
            "to": recorded_b,
        }])
    );

    assert_eq!(fixture.head(&clone), upstream);
    assert_eq!(
        std::fs::read_to_string(clone.join("README.md")).unwrap(),
        "fixture\n"
    );
    assert!(
        !clone.join("mine.txt").exists(),
        "the unpushed commit's file is gone"
    );
    assert!(clone.join("upstream.txt").exists());
    assert!(
        clone.join("scratch.txt").exists(),
        "untracked files are kept"
    );
    assert_eq!(fixture.head(&clone.join("vendor/b")), recorded_b);
    let status = fixture
        .xtask(&["--json", "git", "status"])
        .assert_success()
        .json();
    assert_eq!(status["upstream"]["ahead"], 0);
    assert_eq!(status["upstream"]["behind"], 0);
    assert_eq!(
        status["changes"]["untracked"],
        serde_json::json!(["scratch.txt"])
    );
}

#[test]
fn sync_from_another_branch_switches_to_the_default_branch() {
    let fixture = GitFixture::new();
    let clone = fixture.clone_dir();
    fixture.git(&clone, &["switch", "--quiet", "-c", "topic"]);
    let topic = fixture.commit(&clone, "topic.txt", "t\n", "topic work");

    // Nothing is lost (topic keeps its commit), so no confirmation is needed.
    let run = fixture.xtask(&["git", "sync"]);
    run.assert_success();
    assert!(
        run.stdout.contains("main reset to origin/main"),
        "{}",
        run.stdout
    );
    assert_eq!(fixture.git(&clone, &["branch", "--show-current"]), "main");
    assert_eq!(fixture.git(&clone, &["rev-parse", "topic"]), topic);
}

#[test]
fn clean_lists_refuses_then_deletes_untracked_files_only() {
    let fixture = GitFixture::new();
    let clone = fixture.clone_dir();
    std::fs::write(clone.join(".gitignore"), "ignored.log\n").unwrap();
    fixture.git(&clone, &["add", ".gitignore"]);
    fixture.git(&clone, &["commit", "--quiet", "-m", "ignore logs"]);
    std::fs::write(clone.join("ignored.log"), "kept\n").unwrap();
    std::fs::write(clone.join("stray.txt"), "x\n").unwrap();
    std::fs::create_dir(clone.join("stray-dir")).unwrap();
    std::fs::write(clone.join("stray-dir/file"), "x\n").unwrap();

    let refused = fixture.xtask(&["git", "clean"]);
    refused.assert_failure();
    assert!(refused.stderr.contains("stray.txt"), "{}", refused.stderr);
    assert!(refused.stderr.contains("stray-dir/"), "{}", refused.stderr);
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    assert!(clone.join("stray.txt").exists());

    let report = fixture
        .xtask(&["--json", "git", "clean", "--force"])
        .assert_success()
        .json();
    assert_eq!(
        report["removed"],
        serde_json::json!(["stray-dir/", "stray.txt"])
    );
    assert!(!clone.join("stray.txt").exists());
    assert!(!clone.join("stray-dir").exists());
    assert!(clone.join("ignored.log").exists(), "ignored files are kept");

    let nothing = fixture.xtask(&["git", "clean"]);
    nothing.assert_success();
    assert!(
        nothing.stdout.contains("nothing to clean"),
        "{}",
        nothing.stdout
    );
}
