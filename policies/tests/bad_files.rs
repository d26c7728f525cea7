//! A bad policy or users file refuses to load, naming the file and line.

use lianqin_policies::{MaskFunctions, PolicyEngine, PolicyError};

const MODEL: &str = include_str!("../model.conf");
const POLICY: &str = include_str!("../policy.csv");
const USERS: &str = include_str!("../users.toml");

async fn load(model: &str, policy: &str, users: &str) -> Result<PolicyEngine, PolicyError> {
    PolicyEngine::from_texts(model, policy, users, MaskFunctions::without_key()).await
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect("needle") + 1
}

fn expect_line(r: Result<PolicyEngine, PolicyError>, file: &str, line: usize, what: &str) {
    match r {
        Err(PolicyError::File { file: f, line: l, message }) => {
            assert_eq!((f.as_str(), l), (file, line), "{message}");
            assert!(message.contains(what), "{message}");
            let shown = PolicyError::File { file: f, line: l, message }.to_string();
            assert!(shown.starts_with(&format!("{file}:{line}: ")), "{shown}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("loaded a bad file"),
    }
}

#[tokio::test]
async fn builtin_loads() {
    PolicyEngine::builtin().await.unwrap();
    load(MODEL, POLICY, USERS).await.unwrap();
}

#[tokio::test]
async fn load_from_dir_and_io_error() {
    let dir = tempfile::tempdir().unwrap();
    for (n, t) in [("model.conf", MODEL), ("policy.csv", POLICY), ("users.toml", USERS)] {
        std::fs::write(dir.path().join(n), t).unwrap();
    }
    lianqin_policies::seal(dir.path()).await.unwrap();
    let e = PolicyEngine::load(dir.path()).await.unwrap();
    assert_eq!(e.version(), PolicyEngine::builtin().await.unwrap().version());
    std::fs::write(dir.path().join("policy.csv"), format!("{POLICY}\np, admin, *, x, *, read, *, allow\n")).unwrap();
    // An unsealed edit is refused; sealed, it loads.
    assert!(matches!(PolicyEngine::load(dir.path()).await, Err(PolicyError::ManifestMismatch { .. })));
    lianqin_policies::seal(dir.path()).await.unwrap();
    assert_ne!(PolicyEngine::load(dir.path()).await.unwrap().version(), e.version());
    std::fs::remove_file(dir.path().join("users.toml")).unwrap();
    assert!(matches!(PolicyEngine::load(dir.path()).await, Err(PolicyError::Io { .. })));
}

#[tokio::test]
async fn bad_policy_lines() {
    let cases = [
        ("p, dept_analyst, *, element, *, read, department=@dept, maybe", "effect must be allow or deny"),
        ("p, dept_analyst, *, element, *, read, department, allow", "no operator"),
        ("p, dept_analyst, *, element, *, read, department=@boss, allow", "unknown variable"),
        ("p, dept_analyst, *, element, *, write, *, allow", "unknown action"),
        ("p, dept_analyst, *, element, *, column, reveal, allow", "unknown column action"),
        ("p, dept_analyst, *, element, sens:topsecret, column, show, allow", "unknown sensitivity label"),
        ("p, dept_analyst, moon_base, element, *, read, *, allow", "unknown department"),
        ("p, dept_analyst, *, element, *, read, *", "fields"),
        ("g, someone, dept_analyst", "3 fields"),
        ("q, a, b", "unknown line type"),
        ("p, dept_analyst, *, ele*ment, *, read, *, allow", "bad table pattern"),
    ];
    for (bad, what) in cases {
        let text = format!("{POLICY}\n# injected\n{bad}\n");
        let line = line_of(&text, bad);
        expect_line(load(MODEL, &text, USERS).await, "policy.csv", line, what);
    }
}

#[tokio::test]
async fn bad_users() {
    // Unknown department: the line of the [[user]] header.
    let text = USERS.replacen("department = \"ecology\"", "department = \"moon_base\"", 1);
    let entry_line = {
        let dl = line_of(&text, "moon_base");
        // the header of that entry is the nearest [[user]] above
        text.lines().take(dl).enumerate().filter(|(_, l)| l.trim() == "[[user]]").last().unwrap().0 + 1
    };
    expect_line(load(MODEL, POLICY, &text).await, "users.toml", entry_line, "unknown department");
    // TOML syntax error: the line of the error.
    let text = format!("{USERS}\n[[user]]\nname = \"unterminated\nroles = []\n");
    let line = line_of(&text, "name = \"unterminated");
    expect_line(load(MODEL, POLICY, &text).await, "users.toml", line, "");
    // Undefined role.
    let text = USERS.replacen("roles = [\"auditor\"]", "roles = [\"auditorr\"]", 1);
    let dl = line_of(&text, "auditorr");
    let header = text.lines().take(dl).enumerate().filter(|(_, l)| l.trim() == "[[user]]").last().unwrap().0 + 1;
    expect_line(load(MODEL, POLICY, &text).await, "users.toml", header, "not defined in policy.csv");
    // Not an argon2id hash.
    let text = format!(
        "{USERS}\n[[user]]\nname = \"y\"\ndepartment = \"police\"\nroles = [\"police_analyst\"]\npassword_hash = \"plaintext\"\n"
    );
    let header = text.lines().enumerate().filter(|(_, l)| l.trim() == "[[user]]").last().unwrap().0 + 1;
    expect_line(load(MODEL, POLICY, &text).await, "users.toml", header, "bad password hash");
    // Unknown field.
    let text = format!(
        "{USERS}\n[[user]]\nname = \"z\"\ndepartment = \"police\"\nroles = [\"police_analyst\"]\npassword_hash = \"x\"\nclearance = 9\n"
    );
    assert!(matches!(load(MODEL, POLICY, &text).await, Err(PolicyError::File { .. })));
}

#[tokio::test]
async fn bad_model() {
    let text = MODEL
        .replace("e = some(where (p.eft == allow)) && !some(where (p.eft == deny))", "e = priority(p.eft) || whatever");
    let line = line_of(&text, "priority(");
    expect_line(load(&text, POLICY, USERS).await, "model.conf", line, "unsupported policy effect");
    let text = MODEL.replace("r = sub, dom, obj, col, sens, sem, act", "r = sub, obj, act");
    let line = line_of(&text, "r = sub, obj, act");
    expect_line(load(&text, POLICY, USERS).await, "model.conf", line, "request definition");
}
