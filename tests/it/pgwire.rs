//! The Postgres wire server (`lianqin serve`) with real clients: Debian's
//! `psql` and Python's psycopg log in with SCRAM-SHA-256 and see exactly
//! what `lianqin sql --as USER` shows them — over the simple and the
//! extended (prepared, parameterised) protocol; wrong passwords and unknown
//! users are refused with 28P01; bypass attempts are filtered or refused;
//! logins and queries are audited with the client address and session.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use lianqin_tests::lianqin_bin;

/// One demo data dir shared by the tests of this file (built once).
fn data_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let out = Command::new(lianqin_bin()).args(["demo", "--once", "--data-dir"]).arg(&dir).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        dir
    })
}

/// A running `lianqin serve`; interrupted (SIGINT, so it syncs its audit
/// stream) when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(lianqin_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut port = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("lianqin: Postgres wire server on 127.0.0.1:") {
                port = rest.split_whitespace().next().and_then(|p| p.parse().ok());
                break;
            }
        }
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, port: port.expect("server did not report its port") }
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).stderr(Stdio::null()).status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn password(user: &str) -> String {
    if user == "sys.admin" { "admin-demo".into() } else { format!("{user}-demo") }
}

/// psql --csv; returns (ok, stdout, stderr).
fn psql(port: u16, user: &str, pw: &str, ssl: &str, q: &str) -> (bool, String, String) {
    let conn = format!("host=127.0.0.1 port={port} user={user} dbname=lianqin sslmode={ssl} gssencmode=disable connect_timeout=10");
    let out = Command::new("psql")
        .args([&conn, "--csv", "-X", "-v", "ON_ERROR_STOP=1", "-c", q])
        .env("PGPASSWORD", pw)
        .env_remove("PGSERVICE")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}

/// `lianqin sql --as USER --format csv`.
fn cli(user: &str, q: &str) -> String {
    let out = Command::new(lianqin_bin())
        .args(["sql", "--format", "csv", "--as", user, "--data-dir"])
        .arg(data_dir())
        .arg(q)
        .output()
        .unwrap();
    assert!(out.status.success(), "{q}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs a psycopg script (connection in `conn`); returns stdout or panics with stderr.
fn psycopg(port: u16, user: &str, pw: &str, body: &str) -> String {
    let script = format!(
        "import psycopg, sys\n\
         try:\n    conn = psycopg.connect(host='127.0.0.1', port={port}, user={user:?}, password={pw:?}, dbname='lianqin', sslmode='disable', connect_timeout=10)\n\
         except psycopg.Error as e:\n    print('LOGIN-ERROR', str(e).lower())\n    sys.exit(0)\n\
         {body}\n"
    );
    let out = Command::new("python3").arg("-c").arg(&script).output().expect("python3");
    assert!(out.status.success(), "psycopg script failed:\n{script}\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// CSV lines; a lone `""` (how arrow writes a one-column NULL) reads as the
/// empty line psql prints for it.
fn norm(csv: &str) -> Vec<String> {
    let mut v: Vec<String> = csv.lines().map(|l| if l.trim_end() == "\"\"" { String::new() } else { l.trim_end().to_string() }).collect();
    while v.last().is_some_and(|l| l.is_empty()) && v.len() > 2 {
        v.pop();
    }
    v
}

#[test]
fn psql_and_psycopg_see_what_sql_as_shows() {
    let dir = data_dir();
    let mut server = Server::start(dir, &[]);
    let port = server.port;

    // psql (simple protocol): same rows and masks as `lianqin sql --as`.
    for (user, q) in [
        ("he.office", "SELECT count(*) AS n FROM element"),
        ("he.office", "SELECT id_value, phone FROM element_history WHERE kind = 'person' ORDER BY id_value, phone LIMIT 8"),
        ("liu.market", "SELECT kind, count(*) AS n FROM element GROUP BY kind ORDER BY kind"),
        ("chen.ecology", "SELECT count(*) AS n FROM matter"),
        ("zhao.aux", "SELECT division, count(*) AS n FROM element GROUP BY division ORDER BY division"),
        // Bypass attempt: a scalar subquery over persons sees masked values only.
        ("chen.ecology", "SELECT (SELECT max(id_value) FROM element_history WHERE kind = 'person') AS m"),
    ] {
        let (ok, out, err) = psql(port, user, &password(user), "disable", q);
        assert!(ok, "psql as {user}: {q}: {err}");
        assert_eq!(norm(&out), norm(&cli(user, q)), "psql as {user} differs from sql --as for {q}");
    }
    // Market sees no persons at all; masks are really applied (he.office).
    let (_, out, _) = psql(port, "liu.market", "liu.market-demo", "disable", "SELECT count(*) FROM element WHERE kind = 'person'");
    assert_eq!(norm(&out)[1], "0");
    let (_, out, _) = psql(port, "he.office", "he.office-demo", "disable", "SELECT id_value FROM element_history WHERE kind = 'person' AND id_value IS NOT NULL LIMIT 1");
    assert!(norm(&out)[1].contains("****"), "citizen ID not masked: {out}");

    // Catalogs (information_schema, pg_catalog: psql's \dt and \d) list only
    // the tables the user may read, and read no rows.
    let (ok, out, err) = psql(port, "zhao.aux", "zhao.aux-demo", "disable", "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1");
    assert!(ok, "{err}");
    assert!(out.contains("element_history") && !out.contains("raw_police_110") && !out.contains("quarantine"), "{out}");
    let (ok, out, err) = psql(port, "zhao.aux", "zhao.aux-demo", "disable", "\\dt");
    assert!(ok, "\\dt: {err}");
    assert!(out.contains("matter_history") && !out.contains("raw_police_110"), "{out}");
    let (ok, out, err) = psql(port, "zhao.aux", "zhao.aux-demo", "disable", "\\d element_history");
    assert!(ok, "\\d element_history: {err}");
    assert!(out.contains("id_value"), "{out}");
    let (ok, _, _) = psql(port, "zhao.aux", "zhao.aux-demo", "disable", "\\d raw_police_110");
    assert!(!ok, "\\d of a denied table must find nothing");
    let (ok, _, err) = psql(port, "zhao.aux", "zhao.aux-demo", "disable", "SELECT count(*) FROM raw_police_110");
    assert!(!ok && err.contains("permission denied"), "{err}");
    // Read-only: no DDL over the wire, even for the administrator.
    let (ok, _, err) = psql(port, "sys.admin", "admin-demo", "disable", "CREATE TABLE x AS SELECT 1");
    assert!(!ok && err.contains("read-only"), "{err}");
    // SHOW TABLES lists only readable tables; driver session statements work.
    let (ok, out, err) = psql(port, "zhao.aux", "zhao.aux-demo", "disable", "SHOW TABLES");
    assert!(ok, "{err}");
    assert!(out.contains("element") && !out.contains("quarantine") && !out.contains("raw_police_110"), "{out}");
    let (ok, _, err) = psql(port, "liu.market", "liu.market-demo", "disable", "SET application_name = 'x'; SHOW server_version; SELECT version()");
    assert!(ok, "{err}");

    // Wrong password and unknown user: refused alike (pgwire's
    // InvalidPassword, FATAL 28P01; libpq does not expose the SQLSTATE of a
    // failed connection, so the message is checked).
    let (ok, _, err) = psql(port, "he.office", "wrong", "disable", "SELECT 1");
    assert!(!ok && err.to_lowercase().contains("password authentication failed"), "{err}");
    let wrong = psycopg(port, "he.office", "wrong", "print('in')");
    assert!(wrong.contains("LOGIN-ERROR") && wrong.contains("password authentication failed"), "{wrong}");
    let unknown = psycopg(port, "nobody", "nobody-demo", "print('in')");
    assert!(unknown.contains("LOGIN-ERROR") && unknown.contains("password authentication failed"), "{unknown}");

    // psycopg: extended protocol with parameters, prepared statements too.
    let units = norm(&cli("liu.market", "SELECT count(*) AS n FROM element WHERE kind = 'unit_place'"))[1].clone();
    let out = psycopg(
        port,
        "liu.market",
        "liu.market-demo",
        "for kind in ['person', 'unit_place']:\n    print(conn.execute('SELECT count(*) FROM element WHERE kind = %s', (kind,), prepare=True).fetchone()[0])\n\
         print(conn.execute('SELECT count(*) FROM element WHERE kind = %s', ('unit_place',)).fetchone()[0])\n",
    );
    assert_eq!(norm(&out), vec!["0".to_string(), units.clone(), units], "{out}");
    // A denied table over the extended protocol: refused with 42501.
    let out = psycopg(
        port,
        "zhao.aux",
        "zhao.aux-demo",
        "try:\n    conn.execute('SELECT count(*) FROM raw_police_110 WHERE source_key = %s', ('x',), prepare=True)\n    print('NOT-REFUSED')\nexcept psycopg.Error as e:\n    print('ERR', e.sqlstate)\n",
    );
    assert_eq!(out.trim(), "ERR 42501");
    let want = norm(&cli("he.office", "SELECT id_value FROM element_history WHERE kind = 'person' AND id_value IS NOT NULL ORDER BY id_value LIMIT 3"));
    let out = psycopg(
        port,
        "he.office",
        "he.office-demo",
        "for r in conn.execute('SELECT id_value FROM element_history WHERE kind = %s AND id_value IS NOT NULL ORDER BY id_value LIMIT %s', ('person', 3)).fetchall():\n    print(r[0])\n",
    );
    assert_eq!(norm(&out), want[1..].to_vec(), "prepared statement result differs from sql --as");

    // Audit: logins (success and failure, with address and session), queries and denials.
    server.stop();
    let key = lianqin_pipeline::audit::master_key(dir, false).unwrap();
    let mut events = Vec::new();
    for s in lianqin_pipeline::audit::streams(dir) {
        for r in lianqin_audit::read(&s, &key, lianqin_audit::AuditFilter::default()).unwrap() {
            events.push(r.unwrap().event);
        }
    }
    use lianqin_audit::{EventKind, Outcome};
    let pg = |e: &&lianqin_audit::AuditEvent| e.session.as_deref().unwrap_or("").starts_with("pg-");
    let login_ok = events.iter().filter(pg).find(|e| e.kind == EventKind::Login && e.user == "he.office" && e.outcome == Outcome::Success).expect("login audited");
    assert!(login_ok.client_addr.as_deref().unwrap_or("").starts_with("127.0.0.1:"), "{login_ok:?}");
    assert!(login_ok.session.as_deref().unwrap_or("").starts_with("pg-"));
    assert_eq!(login_ok.department, "eco_police_office");
    assert!(events.iter().filter(pg).any(|e| e.kind == EventKind::Login && e.user == "he.office" && e.outcome == Outcome::Failure));
    assert!(events.iter().filter(pg).any(|e| e.kind == EventKind::Login && e.user == "nobody" && e.outcome == Outcome::Failure));
    assert!(events.iter().any(|e| e.kind == EventKind::Query
        && e.user == "liu.market"
        && e.session.as_deref().unwrap_or("").starts_with("pg-")
        && e.sql.as_deref().unwrap_or("").contains("kind")));
    assert!(events.iter().filter(pg).any(|e| e.kind == EventKind::Denial && e.user == "zhao.aux" && e.tables.iter().any(|t| t == "raw_police_110")));
    // Nothing secret in the trail.
    let all = serde_json::to_string(&events.iter().map(|e| serde_json::to_value(e).unwrap()).collect::<Vec<_>>()).unwrap();
    assert!(!all.contains("he.office-demo") && !all.contains("liu.market-demo"), "a password reached the audit trail");
}

#[test]
fn tls_with_a_self_signed_certificate() {
    let dir = data_dir();
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let server = Server::start(dir, &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    let (ok, out, err) = psql(server.port, "liu.market", "liu.market-demo", "require", "SELECT ssl FROM (SELECT true AS ssl)");
    assert!(ok, "TLS login failed: {err}");
    assert_eq!(norm(&out)[1], "t");
    let (ok, out, err) = psql(server.port, "liu.market", "liu.market-demo", "require", "SELECT count(*) AS n FROM element WHERE kind = 'person'");
    assert!(ok, "{err}");
    assert_eq!(norm(&out)[1], "0");
    // Plain text is refused when TLS is configured.
    let (ok, _, err) = psql(server.port, "liu.market", "liu.market-demo", "disable", "SELECT 1");
    assert!(!ok && err.contains("TLS"), "{err}");
}

#[test]
fn new_commits_become_visible_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let demo = |scale: &str| {
        let out = Command::new(lianqin_bin()).args(["demo", "--once", "--scale", scale, "--data-dir"]).arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    demo("1");
    let server = Server::start(dir.path(), &[]);
    let count = || {
        let (ok, out, err) = psql(server.port, "he.office", "he.office-demo", "disable", "SELECT count(*) AS n FROM element_history");
        assert!(ok, "{err}");
        norm(&out)[1].parse::<i64>().unwrap()
    };
    let before = count();
    // More records from the (larger) simulation are committed by another process.
    demo("2");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let after = count();
    assert!(after > before, "new commits not visible: {before} → {after}");
}
