//! The HTTP API fuzzed from its OpenAPI document by schemathesis: a real server on SQLite and on PostgreSQL
//! (API key set, rate limits off), every documented operation but the endless `/dashboard/stream` with the API
//! key, then the client routes (`/messages`, `/poll`, `/presence/…`, `/typing`) with a user's token, every check
//! but `ignored_auth` (after 10 wrong keys an address is answered 429 by design: RELIABILITY.md, "API key
//! guessing"). A 5xx, a status code or content type the document does not list, a body outside its schema, a
//! valid request refused or an invalid one accepted fails the test with schemathesis's own report. What the
//! API does that OpenAPI 3.0 cannot express is listed, with the reason, in tests/schemathesis.toml.
//!
//! schemathesis is installed on first run into a virtual environment under the target directory
//! (`python3 -m venv`, then pip from PyPI, pinned). Without python3 (or its venv module) the test is skipped
//! locally and fails under `CI=true` (`REALTIME_TEST_PYTHON` names another interpreter). `REALTIME_TEST_SCHEMATHESIS_EXAMPLES` sets the test cases per operation
//! and phase (50 by default; 0 skips the test); `REALTIME_TEST_SCHEMATHESIS_SEED` the seed of the requests (1 by
//! default; `random` draws one).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The schemathesis release the suite runs (the one of the runs recorded in RELIABILITY.md).
const VERSION: &str = "4.32.5";
const KEY: &str = "schemathesis-test-key";
/// A run that takes longer than this is stopped and fails (one of 50 examples took 1–4 minutes here).
const TIMEOUT: Duration = Duration::from_secs(600);

static INSTALL: Mutex<()> = Mutex::new(());

/// The schemathesis executable, installed if needed; Err(reason) when this machine cannot install it.
fn schemathesis() -> Result<PathBuf, String> {
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let venv = common::target_dir().join("tools").join(format!("schemathesis-{VERSION}"));
    let exe = venv.join("bin/schemathesis");
    if version_of(&exe).is_some_and(|v| v.contains(VERSION)) {
        return Ok(exe);
    }
    let python = std::env::var("REALTIME_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    if Command::new(&python).arg("--version").output().is_err() {
        return Err(format!(
            "{python} is not installed (needs Python 3.9+ with venv and pip: apt-get install python3-venv; \
             REALTIME_TEST_PYTHON names another interpreter)"
        ));
    }
    let _ = std::fs::remove_dir_all(&venv);
    let started = Instant::now();
    let (code, out, err) = common::run(Command::new(&python).arg("-m").arg("venv").arg(&venv));
    if code != 0 {
        let _ = std::fs::remove_dir_all(&venv);
        return Err(format!(
            "`{python} -m venv` failed (install python3-venv, or name another interpreter in REALTIME_TEST_PYTHON): \
             {out}{err}"
        ));
    }
    let (code, out, err) = common::run(
        Command::new(venv.join("bin/python"))
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("schemathesis=={VERSION}")),
    );
    if code != 0 {
        let _ = std::fs::remove_dir_all(&venv);
        panic!("pip could not install schemathesis {VERSION} from PyPI into {}:\n{out}{err}", venv.display());
    }
    let installed = version_of(&exe).unwrap_or_else(|| panic!("{} does not run after its install", exe.display()));
    common::note(&format!(
        "schemathesis: installed {} into {} in {:.1} s",
        installed.trim(),
        venv.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(exe)
}

fn version_of(exe: &Path) -> Option<String> {
    let out = Command::new(exe).arg("--version").stdin(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The seed of the generated requests: fixed unless REALTIME_TEST_SCHEMATHESIS_SEED says otherwise (`random`
/// draws one; schemathesis prints it). Fixed, because the document cannot say everything the server checks:
/// a string of `maxLength` characters that are several bytes each is refused where the limit is in bytes (a
/// room name, an `eventType`), which a drawn seed may generate now and then. A change to the document or the
/// server changes the requests too.
fn seed() -> Option<String> {
    match std::env::var("REALTIME_TEST_SCHEMATHESIS_SEED") {
        Ok(v) if v.trim() == "random" => None,
        Ok(v) => Some(v.trim().to_string()),
        Err(_) => Some("1".into()),
    }
}

/// Test cases per operation and phase; None when the test is turned off.
fn examples() -> Option<u32> {
    let n = match std::env::var("REALTIME_TEST_SCHEMATHESIS_EXAMPLES") {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            panic!("REALTIME_TEST_SCHEMATHESIS_EXAMPLES={v:?} is not a number (test cases per operation; 0 skips)")
        }),
        Err(_) => 50,
    };
    (n > 0).then_some(n)
}

/// The routes that act as a user (tests/openapi.rs and docs/openapi.json: "client routes").
const CLIENT_ROUTES: &str = "^/(messages|poll|presence/|typing)";

/// The one rule of the run with the API key that the run with a user's token must not have: with the key, the
/// client routes act for the user named by `userId`, which is then required (400 without it); with a token it is
/// optional. The document describes both in one schema, where `userId` is optional.
const CLIENT_ROUTES_WITH_THE_KEY: &str = r#"
[[operations]]
include-path-regex = "^/(messages|poll|presence/|typing)"
checks.positive_data_acceptance.expected-statuses = [200, 201, 400, 401, 403, 404, 409, 429]
"#;

/// A user's token for the client routes, signed with the secret the test servers verify with.
fn user_token() -> String {
    let now = chrono::Utc::now().timestamp();
    let claims =
        serde_json::json!({ "sub": "schemathesis-user", "name": "Schemathesis", "iat": now, "exp": now + 3600 });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(common::SECRET.as_bytes()),
    )
    .unwrap()
}

/// One schemathesis run against `url` with the committed settings plus `extra_config`; Err(report) on failure.
fn run(exe: &Path, url: &str, examples: u32, args: &[String], extra_config: &str) -> Result<(String, f64), String> {
    // Its working directory is a temp dir: nothing it writes lands in the repository.
    let dir = common::tempdir();
    let config = dir.path().join("schemathesis.toml");
    let shared = std::fs::read_to_string(common::path("tests/schemathesis.toml")).expect("tests/schemathesis.toml");
    std::fs::write(&config, shared + extra_config).unwrap();
    let log = dir.path().join("schemathesis.log");
    let mut cmd = Command::new(exe);
    cmd.current_dir(dir.path())
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(common::path("docs/openapi.json"))
        .args(["--url", url])
        .args(["--checks", "all", "--exclude-checks", "ignored_auth"])
        .args(["--max-examples", &examples.to_string()])
        .args(["--exclude-path", "/dashboard/stream"])
        .args(["--workers", "1", "--generation-allow-x00", "false", "--request-timeout", "30"])
        .args(["--output-truncate", "false", "--no-color", "--generation-database", ":memory:"])
        .args(args)
        .args(seed().map(|seed| format!("--seed={seed}")))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap());
    let command_line = format!("{cmd:?}");
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{} does not start: {e}", exe.display()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let secs = started.elapsed().as_secs_f64();
    let report = std::fs::read_to_string(&log).unwrap_or_default()
        + &std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    let context = format!(
        "(the command: {command_line}; its settings: tests/schemathesis.toml{})",
        if extra_config.is_empty() { String::new() } else { format!(" and{extra_config}") }
    );
    match status {
        None => Err(format!("schemathesis did not finish within {TIMEOUT:?}; its output so far:\n{report}\n{context}")),
        Some(s) if !s.success() => Err(format!("schemathesis found failures ({s}); its report:\n{report}\n{context}")),
        Some(_) => {
            // The closing summary: "Test cases:" and the line after it ("1584 generated, 1584 passed").
            let lines: Vec<&str> = report.lines().map(str::trim).collect();
            let cases = lines
                .iter()
                .position(|l| *l == "Test cases:")
                .and_then(|i| lines.get(i + 1))
                .unwrap_or_else(|| panic!("schemathesis exited 0 without its summary:\n{report}"));
            // "N errored" without an error in the report: stateful scenarios that schemathesis ended on its own
            // side (seen with request values it could not encode, such as lone surrogates); it exits 0 then.
            Ok((cases.to_string(), secs))
        }
    }
}

/// Runs schemathesis against a server started with `env`, twice: every operation with the API key, then the
/// client routes with a user's token; fails with its report on any failure.
fn fuzz_the_api(what: &str, env: &[(&str, &str)]) {
    let Some(examples) = examples() else {
        common::note(&format!("SKIPPED {what}: REALTIME_TEST_SCHEMATHESIS_EXAMPLES=0"));
        return;
    };
    let exe = match schemathesis() {
        Ok(exe) => exe,
        Err(reason) => return common::cannot_run(what, &reason),
    };
    // No rate limits: the run with a token acts as one user, whose event budget would answer 429 to most of it.
    let mut all_env =
        vec![("REALTIME_API_KEY", KEY), ("REALTIME_RATE_LIMIT", "0"), ("REALTIME_RATE_LIMIT_ENABLED", "false")];
    all_env.extend_from_slice(env);
    let server = common::Server::start(&all_env);
    let with_key = vec!["--header".to_string(), format!("X-API-Key: {KEY}")];
    let with_token = vec![
        "--header".to_string(),
        format!("Authorization: Bearer {}", user_token()),
        "--include-path-regex".to_string(),
        CLIENT_ROUTES.to_string(),
    ];
    let mut failures = Vec::new();
    for (label, args, extra) in [
        ("every operation with the API key", &with_key, CLIENT_ROUTES_WITH_THE_KEY),
        ("the client routes with a user's token", &with_token, ""),
    ] {
        match run(&exe, &server.url, examples, args, extra) {
            Ok((cases, secs)) => common::note(&format!(
                "schemathesis {what}, {label}: {examples} examples per operation, seed {}, {secs:.1} s: {cases}",
                seed().unwrap_or_else(|| "random".into())
            )),
            Err(report) => failures.push(format!("{what}, {label}: {report}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_api_answers_schemathesis_as_documented_on_sqlite() {
    fuzz_the_api("schemathesis on SQLite", &[]);
}

#[test]
fn the_api_answers_schemathesis_as_documented_on_postgres() {
    let Some(db) = common::TestDb::new("schemathesis on PostgreSQL") else { return };
    fuzz_the_api("schemathesis on PostgreSQL", &[("DATABASE_URL", &db.url)]);
}
