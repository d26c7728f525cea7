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
    /// The server's stderr lines (its warnings) after the start-up line.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        Server::start_with(dir, extra, None)
    }

    /// With `policies`, the server reads (and watches) that policy folder.
    fn start_with(dir: &Path, extra: &[&str], policies: Option<&Path>) -> Server {
        let mut cmd = Command::new(lianqin_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        match policies {
            Some(p) => cmd.env("LIANQIN_POLICIES", p),
            // The built-in demo users, on loopback only.
            None => cmd.env_remove("LIANQIN_POLICIES").arg("--demo-users"),
        };
        let mut child =
            cmd.arg("--data-dir").arg(dir).args(extra).env("RUST_LOG", "warn").stderr(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut port = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("lianqin: Postgres wire server on 127.0.0.1:") {
                port = rest.split_whitespace().next().and_then(|p| p.parse().ok());
                break;
            }
        }
        // Keep draining stderr so the server never blocks on a full pipe;
        // keep the lines for tests that wait on what the server reports.
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Server { child, port: port.expect("server did not report its port"), log }
    }

    /// The stderr lines so far.
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
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
    lianqin_tests::demo_password(user)
}

/// psql --csv; returns (ok, stdout, stderr).
fn psql(port: u16, user: &str, pw: &str, ssl: &str, q: &str) -> (bool, String, String) {
    let conn = format!(
        "host=127.0.0.1 port={port} user={user} dbname=lianqin sslmode={ssl} gssencmode=disable connect_timeout=10"
    );
    let out = Command::new("psql")
        .args([&conn, "--csv", "-X", "-v", "ON_ERROR_STOP=1", "-c", q])
        .env("PGPASSWORD", pw)
        .env_remove("PGSERVICE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `lianqin sql --as USER --format csv`.
fn cli(user: &str, q: &str) -> String {
    let out = Command::new(lianqin_bin())
        .args(["sql", "--format", "csv", "--as", user, "--data-dir"])
        .arg(data_dir())
        .env("LIANQIN_PASSWORD", password(user))
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
    let mut v: Vec<String> =
        csv.lines().map(|l| if l.trim_end() == "\"\"" { String::new() } else { l.trim_end().to_string() }).collect();
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
        (
            "he.office",
            "SELECT id_value, phone FROM element_history WHERE kind = 'person' ORDER BY id_value, phone LIMIT 8",
        ),
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
    let (_, out, _) =
        psql(port, "liu.market", "liu.market-demo", "disable", "SELECT count(*) FROM element WHERE kind = 'person'");
    assert_eq!(norm(&out)[1], "0");
    let (_, out, _) = psql(
        port,
        "he.office",
        "he.office-demo",
        "disable",
        "SELECT id_value FROM element_history WHERE kind = 'person' AND id_value IS NOT NULL LIMIT 1",
    );
    assert!(norm(&out)[1].contains("****"), "citizen ID not masked: {out}");

    // Catalogs (information_schema, pg_catalog: psql's \dt and \d) list only
    // the tables the user may read, and read no rows.
    let (ok, out, err) = psql(
        port,
        "zhao.aux",
        "zhao.aux-demo",
        "disable",
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    );
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
    let (ok, _, err) = psql(
        port,
        "liu.market",
        "liu.market-demo",
        "disable",
        "SET application_name = 'x'; SHOW server_version; SELECT version()",
    );
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
    let want = norm(&cli(
        "he.office",
        "SELECT id_value FROM element_history WHERE kind = 'person' AND id_value IS NOT NULL ORDER BY id_value LIMIT 3",
    ));
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
    let login_ok = events
        .iter()
        .filter(pg)
        .find(|e| e.kind == EventKind::Login && e.user == "he.office" && e.outcome == Outcome::Success)
        .expect("login audited");
    assert!(login_ok.client_addr.as_deref().unwrap_or("").starts_with("127.0.0.1:"), "{login_ok:?}");
    assert!(login_ok.session.as_deref().unwrap_or("").starts_with("pg-"));
    assert_eq!(login_ok.department, "eco_police_office");
    assert!(
        events
            .iter()
            .filter(pg)
            .any(|e| e.kind == EventKind::Login && e.user == "he.office" && e.outcome == Outcome::Failure)
    );
    assert!(
        events
            .iter()
            .filter(pg)
            .any(|e| e.kind == EventKind::Login && e.user == "nobody" && e.outcome == Outcome::Failure)
    );
    assert!(events.iter().any(|e| e.kind == EventKind::Query
        && e.user == "liu.market"
        && e.session.as_deref().unwrap_or("").starts_with("pg-")
        && e.sql.as_deref().unwrap_or("").contains("kind")));
    assert!(events.iter().filter(pg).any(|e| e.kind == EventKind::Denial
        && e.user == "zhao.aux"
        && e.tables.iter().any(|t| t == "raw_police_110")));
    // The wire entry carries the same policy detail as the CLI's entry for
    // the same statement: columns, masks, matched rules, policy version.
    let masked = "SELECT id_value, phone FROM element_history WHERE kind = 'person' ORDER BY id_value, phone LIMIT 8";
    let detail = |e: &lianqin_audit::AuditEvent| {
        (e.columns.clone(), e.masks.clone(), e.filters.clone(), e.rule.clone(), e.rule_version.clone())
    };
    let wire = events
        .iter()
        .filter(pg)
        .find(|e| e.kind == EventKind::Query && e.user == "he.office" && e.sql.as_deref() == Some(masked))
        .expect("wire query audited");
    let via_cli = events
        .iter()
        .find(|e| !pg(e) && e.kind == EventKind::Query && e.user == "he.office" && e.sql.as_deref() == Some(masked))
        .expect("cli query audited");
    assert!(wire.masks.iter().any(|m| m.starts_with("element_history.id_value:")), "{wire:?}");
    assert_eq!(detail(wire), detail(via_cli));
    // Nothing secret in the trail.
    let all =
        serde_json::to_string(&events.iter().map(|e| serde_json::to_value(e).unwrap()).collect::<Vec<_>>()).unwrap();
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
    let (ok, out, err) =
        psql(server.port, "liu.market", "liu.market-demo", "require", "SELECT ssl FROM (SELECT true AS ssl)");
    assert!(ok, "TLS login failed: {err}");
    assert_eq!(norm(&out)[1], "t");
    let (ok, out, err) = psql(
        server.port,
        "liu.market",
        "liu.market-demo",
        "require",
        "SELECT count(*) AS n FROM element WHERE kind = 'person'",
    );
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
        let out = Command::new(lianqin_bin())
            .args(["demo", "--once", "--scale", scale, "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    demo("1");
    let server = Server::start(dir.path(), &[]);
    let count = || {
        let (ok, out, err) =
            psql(server.port, "he.office", "he.office-demo", "disable", "SELECT count(*) AS n FROM element_history");
        assert!(ok, "{err}");
        norm(&out)[1].parse::<i64>().unwrap()
    };
    let before = count();
    // More records from the (larger) simulation are committed by another process.
    demo("2");
    let mut after = before;
    lianqin_tests::wait_until_blocking(std::time::Duration::from_secs(15), || {
        after = count();
        after > before
    });
    assert!(after > before, "new commits not visible: {before} → {after}");
}

/// psycopg: runs `sql` and prints `OK <first column of the first row>` or
/// `ERR <sqlstate> <message>`.
fn psycopg_try(port: u16, user: &str, sql: &str, prepare: bool) -> String {
    let body = format!(
        "try:\n    r = conn.execute({sql:?}, prepare={p}).fetchone()\n    print('OK', r[0])\nexcept psycopg.Error as e:\n    print('ERR', e.sqlstate, str(e).replace(chr(10), ' '))\n",
        p = if prepare { "True" } else { "False" }
    );
    psycopg(port, user, &password(user), &body).trim().to_string()
}

#[test]
fn only_the_auditor_reads_the_audit_table_over_the_wire() {
    let dir = data_dir();
    let mut server = Server::start(dir, &[]);
    let port = server.port;

    // The auditor sees what `lianqin sql --as qian.audit` shows (entries of
    // the demo's hub stream, which no longer changes).
    let q =
        "SELECT stream, seq, kind, \"user\", outcome FROM audit WHERE stream = 'demo-hub' AND seq <= 5 ORDER BY seq";
    let (ok, out, err) = psql(port, "qian.audit", "qian.audit-demo", "disable", q);
    assert!(ok, "auditor over psql: {err}");
    assert_eq!(norm(&out), norm(&cli("qian.audit", q)), "psql as qian.audit differs from sql --as");
    assert_eq!(norm(&out).len(), 6, "{out}");
    // Extended protocol with a parameter, and the catalog lists the table.
    let out =
        psycopg_try(port, "qian.audit", "SELECT count(*) FROM audit WHERE stream = 'demo-hub' AND seq <= 5", true);
    assert_eq!(out, "OK 5");
    let (ok, out, err) = psql(port, "qian.audit", "qian.audit-demo", "disable", "\\dt");
    assert!(ok && out.contains("audit"), "{out}{err}");

    // Everyone else is refused with 42501: administrators (separation of
    // duties) and analysts, over both protocols.
    for user in ["sys.admin", "liu.market", "zhao.aux", "he.office"] {
        for prepare in [false, true] {
            let out = psycopg_try(port, user, "SELECT count(*) FROM audit", prepare);
            assert!(out.starts_with("ERR 42501"), "{user} (prepare={prepare}) read the audit table: {out}");
        }
    }
    let (ok, _, err) = psql(port, "sys.admin", "admin-demo", "disable", "SELECT kind FROM audit LIMIT 1");
    assert!(!ok && err.contains("permission denied"), "{err}");
    let (ok, out, _) = psql(port, "sys.admin", "admin-demo", "disable", "SHOW TABLES");
    assert!(ok && !out.lines().any(|l| l.trim() == "audit"), "{out}");

    // The read is an audit_read entry of the pgwire session, like the CLI's;
    // the refusals are denials.
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
    let read = events
        .iter()
        .filter(pg)
        .find(|e| {
            e.kind == EventKind::AuditRead
                && e.user == "qian.audit"
                && e.sql.as_deref().is_some_and(|s| s.contains("seq <= 5") && s.contains("kind"))
        })
        .expect("audit_read entry for the wire read");
    assert_eq!(read.outcome, Outcome::Success);
    assert_eq!(read.rows, Some(5));
    assert!(read.tables.iter().any(|t| t == "audit"));
    for user in ["sys.admin", "liu.market"] {
        assert!(
            events
                .iter()
                .filter(pg)
                .any(|e| e.kind == EventKind::Denial && e.user == user && e.tables.iter().any(|t| t == "audit")),
            "no denial entry for {user}"
        );
    }
}

#[test]
fn session_user_and_catalog_mixes() {
    let dir = data_dir();
    let server = Server::start(dir, &[]);
    let port = server.port;

    // session_user / current_user / user name the logged-in user.
    let (ok, out, err) =
        psql(port, "liu.market", "liu.market-demo", "disable", "SELECT current_user, session_user, user");
    assert!(ok, "{err}");
    assert_eq!(norm(&out)[1], "liu.market,liu.market,liu.market", "{out}");
    let (ok, out, err) = psql(port, "he.office", "he.office-demo", "disable", "SELECT current_user");
    assert!(ok, "{err}");
    assert_eq!(norm(&out)[1], "he.office", "{out}");
    for q in ["SELECT current_user", "SELECT session_user", "SELECT user"] {
        assert_eq!(psycopg_try(port, "chen.ecology", q, true), "OK chen.ecology", "{q}");
    }
    // ... also beside data, with the user's own permissions.
    let q = "SELECT count(*) AS n FROM element";
    let n = norm(&cli("liu.market", q))[1].clone();
    let (ok, out, err) =
        psql(port, "liu.market", "liu.market-demo", "disable", "SELECT current_user AS u, count(*) AS n FROM element");
    assert!(ok, "{err}");
    assert_eq!(norm(&out)[1], format!("liu.market,{n}"));

    // A query mixing catalogs and libraries: 0A000 naming both sides, not
    // "table not found" — over both protocols, for visible and hidden tables.
    for (user, q, names) in [
        ("liu.market", "SELECT count(*) FROM pg_catalog.pg_class c, element e", ["pg_catalog.pg_class", "element"]),
        (
            "liu.market",
            "SELECT e.kind FROM element e WHERE e.kind IN (SELECT relname FROM pg_class)",
            ["pg_catalog.pg_class", "element"],
        ),
        (
            "zhao.aux",
            "SELECT count(*) FROM information_schema.tables t JOIN raw_police_110 r ON true",
            ["information_schema.tables", "raw_police_110"],
        ),
    ] {
        for prepare in [false, true] {
            let out = psycopg_try(port, user, q, prepare);
            assert!(out.starts_with("ERR 0A000") && out.contains("not supported"), "{user}: {q}: {out}");
            for name in names {
                assert!(out.contains(name), "{q}: {out} does not name {name}");
            }
        }
        let (ok, _, err) = psql(port, user, &password(user), "disable", q);
        assert!(!ok && err.contains("not supported") && !err.contains("not found"), "{err}");
    }
    // Catalog-only and data-only queries are unaffected; unknown tables are 42P01.
    let (ok, _, err) =
        psql(port, "liu.market", "liu.market-demo", "disable", "SELECT count(*) FROM pg_catalog.pg_class");
    assert!(ok, "{err}");
    assert!(psycopg_try(port, "liu.market", "SELECT count(*) FROM no_such_table", false).starts_with("ERR 42P01"));
}

/// `lianqin run --config X` with a `[server]` section serves Postgres-wire
/// logins beside the hub, with the permissions of `lianqin sql --as`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_a_server_section_serves_logins() {
    use lianqin_pipeline::demo;
    use lianqin_sim::SimConfig;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let cfg = SimConfig {
        incidents: 60,
        tickets: 60,
        enterprises: 30,
        cases: 20,
        env_files: 1,
        env_rows_per_file: 10,
        ..Default::default()
    };
    let key = cfg.api_key.clone();
    let sim = demo::start_simulation(&d, cfg).await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf_dir = d.join("conf");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let conf = conf_dir.join("lianqin.toml");
    let text =
        format!("{}\n[server]\nlisten = \"127.0.0.1:{port}\"\n", demo::demo_config_toml(&sim, demo::DEMO_KEY_ENV));
    std::fs::write(&conf, text).unwrap();
    let mut child = Command::new(lianqin_bin())
        .args(["run", "--demo-users", "--config"])
        .arg(&conf)
        .arg("--data-dir")
        .arg(&d)
        .env(demo::DEMO_KEY_ENV, &key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn lianqin run");

    // psql logs in and counts; `lianqin sql --as` must print the same count
    // (retried while the hub is still committing).
    let q = "SELECT count(*) AS n FROM element";
    let mut last = (String::new(), String::new());
    let mut same = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        let (d2, q2) = (d.clone(), q.to_string());
        let (wire, local) = tokio::task::spawn_blocking(move || {
            let (ok, out, err) = psql(port, "he.office", "he.office-demo", "disable", &q2);
            let wire = if ok { norm(&out).get(1).cloned().unwrap_or_default() } else { format!("error: {err}") };
            let out = Command::new(lianqin_bin())
                .args(["sql", "--format", "csv", "--as", "he.office", "--data-dir"])
                .arg(&d2)
                .env("LIANQIN_PASSWORD", password("he.office"))
                .arg(&q2)
                .output()
                .unwrap();
            let local = if out.status.success() {
                norm(&String::from_utf8_lossy(&out.stdout)).get(1).cloned().unwrap_or_default()
            } else {
                "error".into()
            };
            (wire, local)
        })
        .await
        .unwrap();
        if wire == local && wire.parse::<i64>().is_ok_and(|n| n > 0) {
            same = true;
            break;
        }
        last = (wire, local);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(sim);
    assert!(
        same,
        "psql through `lianqin run`'s [server] never matched sql --as: wire {:?}, sql --as {:?}",
        last.0, last.1
    );
}

/// A security officer edits the policy while `lianqin serve` runs: the next
/// statements follow the new policy (also in the analyst's tools, no
/// restart), the change is a `policy_change` audit entry with both
/// versions, and a policy that does not load is refused — the one in force
/// stays — and recorded as a failed change.
#[test]
fn policy_edits_apply_without_a_restart_and_are_audited() {
    // Own copies: this test changes the policy version of its data dir.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let pol = tmp.path().join("policies");
    let cp = |from: &Path, to: &Path| {
        let ok = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap().success();
        assert!(ok, "cp -a {} {}", from.display(), to.display());
    };
    cp(data_dir(), &dir);
    cp(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies"), &pol);
    let mut server = Server::start_with(&dir, &[], Some(&pol));
    let port = server.port;
    let q = "SELECT count(*) AS n FROM matter";
    let (ok, before, err) = psql(port, "liu.market", "liu.market-demo", "disable", q);
    assert!(ok, "market analyst reads matters before the change: {err}");

    // The officer denies market analysts the matter library.
    let csv = std::fs::read_to_string(pol.join("policy.csv")).unwrap();
    std::fs::write(pol.join("policy.csv"), format!("{csv}\np, market_analyst, market, matter*, *, read, *, deny\n"))
        .unwrap();
    // Only a sealed edit applies.
    let sealed = Command::new(lianqin_bin()).args(["policy", "seal", "--dir"]).arg(&pol).output().unwrap();
    assert!(sealed.status.success(), "{}", String::from_utf8_lossy(&sealed.stderr));
    let mut denied = None;
    for _ in 0..60 {
        let (ok, out, err) = psql(port, "liu.market", "liu.market-demo", "disable", q);
        if !ok {
            denied = Some(err);
            break;
        }
        assert_eq!(norm(&out), norm(&before));
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let err = denied.expect("the deny rule did not apply within 15 s of the edit");
    assert!(err.contains("permission denied"), "{err}");
    // Other rules still apply.
    let (ok, _, err) = psql(port, "liu.market", "liu.market-demo", "disable", "SELECT count(*) FROM element");
    assert!(ok, "{err}");

    // A broken policy is refused — sealing it fails, and the reloader
    // refuses the unsealed file; the one in force stays.
    std::fs::write(pol.join("policy.csv"), "this is not a policy line\n").unwrap();
    let sealed = Command::new(lianqin_bin()).args(["policy", "seal", "--dir"]).arg(&pol).output().unwrap();
    assert!(!sealed.status.success(), "a broken policy was sealed");
    // Wait until the server has read the broken file and refused it.
    let refused = lianqin_tests::wait_until_blocking(std::time::Duration::from_secs(30), || {
        server.log().iter().any(|l| l.contains("policy change refused"))
    });
    assert!(refused, "the server never refused the broken policy:\n{}", server.log().join("\n"));
    let (ok, _, err) = psql(port, "liu.market", "liu.market-demo", "disable", "SELECT count(*) FROM element");
    assert!(ok, "the policy in force was dropped for a broken file: {err}");
    let (ok, _, _) = psql(port, "liu.market", "liu.market-demo", "disable", q);
    assert!(!ok, "the deny rule was dropped");
    server.stop();

    let key = lianqin_pipeline::audit::master_key(&dir, false).unwrap();
    let mut changes = Vec::new();
    for s in lianqin_pipeline::audit::streams(&dir) {
        for r in lianqin_audit::read(&s, &key, lianqin_audit::AuditFilter::default()).unwrap() {
            let r = r.expect("audit entry reads back");
            if r.event.kind == lianqin_audit::EventKind::PolicyChange {
                changes.push(r.event);
            }
        }
    }
    let applied: Vec<_> = changes.iter().filter(|e| e.detail["reloaded_by"] == "pgwire").collect();
    assert_eq!(applied.len(), 1, "{changes:?}");
    assert_ne!(applied[0].detail["from"], applied[0].detail["to"]);
    assert_eq!(applied[0].outcome, lianqin_audit::Outcome::Success);
    // The unsealed edit may have been seen (and refused) before its seal.
    let refused: Vec<_> = changes.iter().filter(|e| e.outcome == lianqin_audit::Outcome::Failure).collect();
    assert!(!refused.is_empty() && refused.len() <= 2, "{changes:?}");
    assert_eq!(refused.last().unwrap().detail["kept"], applied[0].detail["to"]);
}
