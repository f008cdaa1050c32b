//! `cargo xtask git status` and `git branches` on fixture repositories: upstream position,
//! each kind of change, every submodule state, and the errors for a directory that is not a
//! repository.

use crate::fixtures;

use fixtures::git_repos::GitFixture;

#[test]
fn status_json_reports_branch_upstream_changes_and_system() {
    let fixture = GitFixture::new();
    let clone = fixture.clone_dir();
    fixture.push_upstream("upstream.txt", "new\n", "upstream work");
    fixture.git(&clone, &["fetch", "--quiet"]);
    fixture.commit(&clone, "local.txt", "mine\n", "local work");
    std::fs::write(clone.join("README.md"), "edited\n").unwrap();
    std::fs::write(clone.join("staged.txt"), "staged\n").unwrap();
    fixture.git(&clone, &["add", "staged.txt"]);
    std::fs::write(clone.join("notes.txt"), "untracked\n").unwrap();

    let report = fixture
        .xtask(&["--json", "git", "status"])
        .assert_success()
        .json();
    assert_eq!(report["branch"], "main");
    assert_eq!(report["commit"]["subject"], "local work");
    assert_eq!(
        report["commit"]["hash"].as_str().unwrap(),
        fixture.head(&clone)
    );
    assert!(
        fixture
            .head(&clone)
            .starts_with(report["commit"]["short_hash"].as_str().unwrap()),
        "{report:#}"
    );
    assert_eq!(report["upstream"]["name"], "origin/main");
    assert_eq!(report["upstream"]["ahead"], 1);
    assert_eq!(report["upstream"]["behind"], 1);
    assert_eq!(report["upstream"]["gone"], false);
    assert_eq!(
        report["changes"]["staged"],
        serde_json::json!(["staged.txt"])
    );
    assert_eq!(
        report["changes"]["unstaged"],
        serde_json::json!(["README.md"])
    );
    assert_eq!(
        report["changes"]["untracked"],
        serde_json::json!(["notes.txt"])
    );
    assert_eq!(report["changes"]["conflicted"], serde_json::json!([]));
    assert_eq!(
        report["repo_root"].as_str().unwrap(),
        clone.to_str().unwrap()
    );
    let system = &report["system"];
    assert!(
        system["rustc"].as_str().unwrap().starts_with("rustc "),
        "{system}"
    );
    assert!(
        system["cargo"].as_str().unwrap().starts_with("cargo "),
        "{system}"
    );
    assert_eq!(system["os"], std::env::consts::OS);
    assert_eq!(system["arch"], std::env::consts::ARCH);
}

#[test]
fn status_reports_each_submodule_state() {
    let fixture = GitFixture::new();
    let clone = fixture.clone_dir();
    let submodules = |fixture: &GitFixture| {
        let report = fixture
            .xtask(&["--json", "git", "status"])
            .assert_success()
            .json();
        report["submodules"].as_array().unwrap().clone()
    };

    // Right after a clone, both are at the recorded commit with a detached HEAD.
    let fresh = submodules(&fixture);
    assert_eq!(fresh.len(), 2);
    for (module, path) in fresh.iter().zip(["vendor/a", "vendor/b"]) {
        assert_eq!(module["path"], path);
        assert_eq!(module["name"], path);
        assert_eq!(module["state"], "detached");
        assert_eq!(module["branch"], serde_json::Value::Null);
        assert_eq!(module["commit"], module["recorded_commit"]);
        assert_eq!(
            module["commit"].as_str().unwrap(),
            fixture.head(&clone.join(path))
        );
    }

    // On a branch at the recorded commit: in sync. At another commit: modified.
    fixture.git(&clone.join("vendor/a"), &["switch", "--quiet", "main"]);
    let recorded_b = fixture.head(&clone.join("vendor/b"));
    fixture.git(
        &clone.join("vendor/b"),
        &["checkout", "--quiet", "origin/feature"],
    );
    let states = submodules(&fixture);
    assert_eq!(states[0]["state"], "in_sync");
    assert_eq!(states[0]["branch"], "main");
    assert_eq!(states[1]["state"], "modified");
    assert_eq!(states[1]["recorded_commit"].as_str().unwrap(), recorded_b);
    assert_ne!(states[1]["commit"].as_str().unwrap(), recorded_b);

    // Uncommitted changes inside a submodule make it modified; deinit makes it uninitialised.
    std::fs::write(clone.join("vendor/a/lib.txt"), "dirty\n").unwrap();
    fixture.git(
        &clone,
        &["submodule", "deinit", "--quiet", "--force", "vendor/b"],
    );
    let states = submodules(&fixture);
    assert_eq!(states[0]["state"], "modified");
    assert_eq!(states[0]["dirty"], true);
    assert_eq!(states[1]["state"], "uninitialised");
    assert_eq!(states[1]["commit"], serde_json::Value::Null);
    assert_eq!(states[1]["recorded_commit"].as_str().unwrap(), recorded_b);

    let human = fixture.xtask(&["git", "status"]);
    human.assert_success();
    assert!(human.stdout.contains("uninitialised"), "{}", human.stdout);
    assert!(
        human.stdout.contains("uncommitted changes"),
        "{}",
        human.stdout
    );
}

#[test]
fn status_human_output_summarises_in_one_screen() {
    let fixture = GitFixture::new();
    std::fs::write(fixture.clone_dir().join("notes.txt"), "x\n").unwrap();
    let run = fixture.xtask(&["git", "status"]);
    run.assert_success();
    let stdout = &run.stdout;
    assert!(
        stdout.contains("branch     main → origin/main (up to date)"),
        "{stdout}"
    );
    assert!(stdout.contains("add submodules"), "{stdout}");
    assert!(stdout.contains("1 untracked"), "{stdout}");
    assert!(stdout.contains("notes.txt"), "{stdout}");
    assert!(stdout.contains("vendor/a"), "{stdout}");
    assert!(
        stdout.contains("detached at the recorded commit"),
        "{stdout}"
    );
    assert!(stdout.contains("rustc "), "{stdout}");
    assert!(
        !stdout.contains('\u{1b}'),
        "NO_COLOR output has escape codes: {stdout}"
    );
}

#[test]
fn not_a_repository_is_an_actionable_error() {
    let fixture = GitFixture::new();
    let plain = fixture.root().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let run = fixture.xtask_in(&plain, &["git", "status"]);
    run.assert_failure();
    assert!(
        run.stderr.contains("is not a git repository"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("hint: "), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn branches_lists_upstreams_with_ahead_and_behind() {
    let fixture = GitFixture::new();
    let clone = fixture.clone_dir();
    fixture.push_upstream("u.txt", "u\n", "upstream one");
    fixture.push_upstream("v.txt", "v\n", "upstream two");
    fixture.git(&clone, &["fetch", "--quiet"]);
    fixture.commit(&clone, "l.txt", "l\n", "local one");
    fixture.git(&clone, &["branch", "topic"]);

    let report = fixture
        .xtask(&["--json", "git", "branches"])
        .assert_success()
        .json();
    let local = report["local"].as_array().unwrap();
    let main = local
        .iter()
        .find(|branch| branch["name"] == "main")
        .unwrap();
    assert_eq!(main["current"], true);
    assert_eq!(main["upstream"], "origin/main");
    assert_eq!(main["ahead"], 1);
    assert_eq!(main["behind"], 2);
    assert_eq!(main["subject"], "local one");
    let topic = local
        .iter()
        .find(|branch| branch["name"] == "topic")
        .unwrap();
    assert_eq!(topic["current"], false);
    assert_eq!(topic["upstream"], serde_json::Value::Null);
    let remote: Vec<&str> = report["remote"]
        .as_array()
        .unwrap()
        .iter()
        .map(|branch| branch["name"].as_str().unwrap())
        .collect();
    assert_eq!(remote, ["origin/main"]);
}
