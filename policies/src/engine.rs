//! The policy engine: loads the files, authenticates, and decides per
//! (user, table) and (user, table, column) with one casbin call each.

use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, Mutex};

use casbin::{CoreApi, DefaultModel, Enforcer, StringAdapter};
use datafusion::logical_expr::{Expr, LogicalPlan};
use sha2::{Digest, Sha256};

use crate::mask::MaskFunctions;
use crate::principal::{DUMMY_HASH, Principal, UserRecord, parse_users, verify_password};
use crate::rules::{PolicyFile, Rule, RuleKind, check_model, is_ident, parse_policy};
use crate::{AuthError, ColumnAction, ColumnMeta, PolicyError, TableDecision};

const BUILTIN_MODEL: &str = include_str!("../model.conf");
const BUILTIN_POLICY: &str = include_str!("../policy.csv");
const BUILTIN_USERS: &str = include_str!("../users.toml");

/// Implicit role every user holds (reads `codes`).
pub const EVERYONE_ROLE: &str = "everyone";

/// Maximum number of cached table decisions.
const CACHE_CAP: usize = 4096;

/// The policy engine. Cheap to clone (an `Arc` inside); share it across
/// sessions and threads.
#[derive(Clone)]
pub struct PolicyEngine {
    inner: Arc<Inner>,
    masks: MaskFunctions,
}

/// (token key set, user, table, column metadata).
type CacheKey = (bool, String, String, Vec<ColumnMeta>);

/// An approved sharing grant (申请-审批-授权) as the policy sees it: a role
/// of its own (`role`), given to `user` of `department`, whose `rules` are
/// `policy.csv` lines without the leading `p, ` (their subject is `role`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The grant's role name (unique per grant).
    pub role: String,
    /// The user it is granted to.
    pub user: String,
    /// The user's department.
    pub department: String,
    /// Its rules.
    pub rules: Vec<String>,
    /// The only columns the grant shows (`None`: every column, as the
    /// user's standing column rules show it). On rows the grant alone
    /// admits, other columns read as NULL ([`TableDecision::column_conditions`]);
    /// a listed column keeps the user's standing action (a mask stays a mask).
    pub columns: Option<Vec<String>>,
}

struct Inner {
    enforcer: Enforcer,
    policy: PolicyFile,
    users: BTreeMap<String, UserRecord>,
    version: String,
    /// The model, policy and users texts it was built from (grants are
    /// added to them, [`PolicyEngine::with_grants`]).
    texts: [String; 3],
    cache: Mutex<HashMap<CacheKey, TableDecision>>,
    /// Grant role → the only columns it shows (column-limited grants).
    grant_columns: BTreeMap<String, Vec<String>>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("version", &self.inner.version)
            .field("rules", &self.inner.policy.ordered.len())
            .field("users", &self.inner.users.len())
            .field("masks", &self.masks)
            .finish()
    }
}

impl PolicyEngine {
    /// Load `model.conf`, `policy.csv` and `users.toml` from `dir`. The token
    /// key for HashToken columns comes from `LIANQIN_TOKEN_KEY` (see
    /// [`PolicyEngine::with_token_key`] to set it from config instead).
    ///
    /// The folder must be sealed (`policy.manifest`, see
    /// [`crate::seal`]): a folder without one, or whose files do not match
    /// it, is refused ([`PolicyError::Unsealed`],
    /// [`PolicyError::ManifestMismatch`]). A malformed file refuses to load
    /// with a [`PolicyError::File`] naming the file and line.
    pub async fn load(dir: &Path) -> Result<PolicyEngine, PolicyError> {
        crate::manifest::load_sealed(dir, MaskFunctions::from_env()).await
    }

    /// The starter files compiled into the crate (`policies/model.conf`,
    /// `policy.csv`, `users.toml`). Token key from `LIANQIN_TOKEN_KEY`.
    pub async fn builtin() -> Result<PolicyEngine, PolicyError> {
        Self::from_texts(BUILTIN_MODEL, BUILTIN_POLICY, BUILTIN_USERS, MaskFunctions::from_env()).await
    }

    /// Build an engine from the three file texts.
    pub async fn from_texts(
        model: &str,
        policy: &str,
        users: &str,
        masks: MaskFunctions,
    ) -> Result<PolicyEngine, PolicyError> {
        Self::build(model, policy, users, &[], masks).await
    }

    /// This policy plus approved sharing grants, each a role of its own
    /// given to one user in their department: its rules are checked like
    /// any `policy.csv` line (shown as `grants` in errors). The version
    /// names the grants too (`<version>+grants:<sha256>`).
    pub async fn with_grants(self, grants: &[Grant]) -> Result<PolicyEngine, PolicyError> {
        if grants.is_empty() {
            return Ok(self);
        }
        let [model, policy, users] = self.inner.texts.clone();
        let mut all = policy.clone();
        if !all.ends_with('\n') {
            all.push('\n');
        }
        let mut h = Sha256::new();
        for g in grants {
            for r in &g.rules {
                all.push_str(&format!("p, {r}\n"));
                h.update(r.as_bytes());
                h.update(b"\n");
            }
            if let Some(c) = &g.columns {
                h.update(format!("columns:{}\n", c.join("|")).as_bytes());
            }
            h.update(format!("{}|{}|{}\n", g.user, g.role, g.department).as_bytes());
        }
        let base = self.version();
        let mut e = Self::build(&model, &all, &users, grants, self.masks.clone()).await.map_err(|e| match e {
            PolicyError::File { line, message, .. } => PolicyError::File { file: "grants".into(), line, message },
            other => other,
        })?;
        let inner = Arc::get_mut(&mut e.inner).expect("a new engine is not shared");
        inner.version = format!("{base}+grants:{}", hex::encode(h.finalize()));
        inner.texts = [model, policy, users];
        Ok(e)
    }

    async fn build(
        model: &str,
        policy: &str,
        users: &str,
        grants: &[Grant],
        masks: MaskFunctions,
    ) -> Result<PolicyEngine, PolicyError> {
        check_model(model, "model.conf")?;
        let pf = parse_policy(policy, "policy.csv")?;
        let users_map = parse_users(users, "users.toml")?;
        // Roles named by users must exist in the policy (a typo would silently
        // grant nothing; better to refuse).
        for rec in users_map.values() {
            for r in &rec.entry.roles {
                if !pf.roles.contains(r) {
                    return Err(PolicyError::File {
                        file: "users.toml".into(),
                        line: rec.line,
                        message: format!("user {:?}: role {r:?} is not defined in policy.csv", rec.entry.name),
                    });
                }
            }
            if pf.roles.contains(&rec.entry.name) {
                return Err(PolicyError::File {
                    file: "users.toml".into(),
                    line: rec.line,
                    message: format!("user name {:?} is also a role name", rec.entry.name),
                });
            }
        }
        // casbin text: our validated p lines, the g lines of policy.csv, and
        // one g line per (user, role) in the user's department.
        let mut text = String::new();
        for r in &pf.ordered {
            text.push_str("p, ");
            text.push_str(&r.tokens.join(", "));
            text.push('\n');
        }
        for (m, r, d, _) in &pf.groupings {
            text.push_str(&format!("g, {m}, {r}, {d}\n"));
        }
        for rec in users_map.values() {
            let u = &rec.entry;
            for r in u.roles.iter().map(String::as_str).chain([EVERYONE_ROLE]) {
                text.push_str(&format!("g, {}, {}, {}\n", u.name, r, u.department));
            }
        }
        for g in grants {
            let Some(u) = users_map.get(&g.user) else {
                return Err(PolicyError::File {
                    file: "grants".into(),
                    line: 0,
                    message: format!("grant {}: no user {:?}", g.role, g.user),
                });
            };
            if u.entry.department != g.department || !pf.roles.contains(&g.role) {
                return Err(PolicyError::File {
                    file: "grants".into(),
                    line: 0,
                    message: format!("grant {} for {:?}: department or rules do not match the user", g.role, g.user),
                });
            }
            text.push_str(&format!("g, {}, {}, {}\n", g.user, g.role, g.department));
        }
        let m = DefaultModel::from_str(model).await.map_err(|e| PolicyError::Casbin(format!("model.conf: {e}")))?;
        let enforcer = Enforcer::new(m, StringAdapter::new(text))
            .await
            .map_err(|e| PolicyError::Casbin(format!("policy.csv: {e}")))?;

        let mut h = Sha256::new();
        for t in [model, policy, users] {
            h.update((t.len() as u64).to_le_bytes());
            h.update(t.as_bytes());
        }
        let version = format!("sha256:{}", hex::encode(h.finalize()));
        Ok(PolicyEngine {
            inner: Arc::new(Inner {
                enforcer,
                policy: pf,
                users: users_map,
                version,
                texts: [model.to_string(), policy.to_string(), users.to_string()],
                cache: Mutex::new(HashMap::new()),
                grant_columns: grants
                    .iter()
                    .filter_map(|g| g.columns.as_ref().map(|c| (g.role.clone(), c.clone())))
                    .collect(),
            }),
            masks,
        })
    }

    /// Replace the token key (e.g. from the hub config). Clears the cache.
    pub fn with_token_key(self, key: &[u8]) -> PolicyEngine {
        self.with_masks(MaskFunctions::new(key))
    }

    /// Replace the mask functions (and so the token key).
    pub fn with_masks(self, masks: MaskFunctions) -> PolicyEngine {
        PolicyEngine { inner: self.inner, masks }
    }

    /// The mask functions (with the token key) that [`crate::enforce`] needs.
    pub fn mask_functions(&self) -> &MaskFunctions {
        &self.masks
    }

    /// Hash of the policy files (`sha256:<hex>`), for audit entries.
    pub fn version(&self) -> String {
        self.inner.version.clone()
    }

    /// Names of all users, sorted.
    pub fn users(&self) -> Vec<String> {
        self.inner.users.keys().cloned().collect()
    }

    /// Check a password (argon2id). Unknown user and wrong password are both
    /// refused with the same error, after the same amount of work.
    pub fn authenticate(&self, user: &str, password: &str) -> Result<Principal, AuthError> {
        match self.inner.users.get(user) {
            Some(rec) if verify_password(&rec.entry.password_hash, password) => {
                self.principal(user).ok_or_else(|| AuthError::Failed(user.to_string()))
            }
            Some(_) => Err(AuthError::Failed(user.to_string())),
            None => {
                let _ = verify_password(DUMMY_HASH, password);
                Err(AuthError::Failed(user.to_string()))
            }
        }
    }

    /// The SCRAM-SHA-256 verifier of `user` for Postgres wire logins, if
    /// users.toml gives one (unknown users and users without one: `None`).
    pub fn scram_verifier(&self, user: &str) -> Option<crate::principal::ScramVerifier> {
        let v = self.inner.users.get(user)?.entry.scram.as_deref()?;
        crate::principal::ScramVerifier::parse(v).ok()
    }

    /// Whether users.toml lets the OS account `os_user` act as `user`
    /// without a password (`local_operators` of the user's entry).
    pub fn trusts_local_operator(&self, user: &str, os_user: &str) -> bool {
        self.inner.users.get(user).is_some_and(|r| r.entry.local_operators.iter().any(|o| o == os_user))
    }

    /// The principal for a known user (no password check: for trusted callers
    /// such as a CLI already authenticated by the OS, and for tests).
    pub fn principal(&self, user: &str) -> Option<Principal> {
        let u = &self.inner.users.get(user)?.entry;
        let admin =
            self.enforce_ex(&[&u.name, &u.department, "*", "*", "*", "*", "admin"]).map(|(ok, _)| ok).unwrap_or(false);
        Some(Principal {
            name: u.name.clone(),
            display_name: u.display_name.clone(),
            department: u.department.clone(),
            roles: u.roles.clone(),
            stations: u.stations.clone(),
            divisions: u.divisions.clone(),
            admin,
        })
    }

    /// One casbin call; returns the verdict and the matched rules. Panics
    /// inside casbin are caught and reported as errors (fail closed).
    fn enforce_ex(&self, req: &[&str; 7]) -> Result<(bool, Vec<Rule>), String> {
        let args: Vec<String> = req.iter().map(|s| s.to_string()).collect();
        let res = catch_unwind(AssertUnwindSafe(|| self.inner.enforcer.enforce_ex(args)));
        match res {
            Ok(Ok((ok, rules))) => {
                let mut out = Vec::with_capacity(rules.len());
                for toks in rules {
                    match self.inner.policy.rules.get(&toks) {
                        Some(r) => out.push(r.clone()),
                        None => return Err(format!("casbin matched an unknown rule {toks:?}")),
                    }
                }
                Ok((ok, out))
            }
            Ok(Err(e)) => Err(format!("casbin error: {e}")),
            Err(_) => Err("casbin panicked".into()),
        }
    }

    /// Decide what `who` may see of `table` (async wrapper of
    /// [`PolicyEngine::decide_sync`]; no I/O happens).
    pub async fn decide(&self, who: &Principal, table: &str, columns: &[ColumnMeta]) -> TableDecision {
        self.decide_sync(who, table, columns)
    }

    /// Decide what `who` may see of `table`, whose columns are `columns`.
    ///
    /// One casbin call for the table and one per column; decisions are cached
    /// per (user, table, columns). Never panics: any error denies the table.
    pub fn decide_sync(&self, who: &Principal, table: &str, columns: &[ColumnMeta]) -> TableDecision {
        // The principal must be a known user whose attributes match users.toml:
        // a forged Principal gets nothing (checked before the cache).
        let Some(rec) = self.inner.users.get(&who.name) else {
            return TableDecision::deny(format!("unknown user {:?}", who.name));
        };
        let u = &rec.entry;
        if u.department != who.department || u.divisions != who.divisions || u.stations != who.stations {
            return TableDecision::deny(format!("principal {:?} does not match users.toml", who.name));
        }
        let key = (self.masks.has_token_key(), who.name.clone(), table.to_string(), columns.to_vec());
        if let Ok(c) = self.inner.cache.lock()
            && let Some(d) = c.get(&key)
        {
            return d.clone();
        }
        let d = match catch_unwind(AssertUnwindSafe(|| self.decide_inner(who, table, columns))) {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => TableDecision::deny(format!("policy evaluation error: {e}")),
            Err(_) => TableDecision::deny("policy evaluation panicked".to_string()),
        };
        if let Ok(mut c) = self.inner.cache.lock() {
            if c.len() >= CACHE_CAP {
                c.clear();
            }
            c.insert(key, d.clone());
        }
        d
    }

    fn decide_inner(&self, who: &Principal, table: &str, columns: &[ColumnMeta]) -> Result<TableDecision, String> {
        // Table names reach casbin's keyMatch, which slices by bytes: only
        // plain ASCII identifiers are evaluated.
        if !is_ident(table) {
            return Ok(TableDecision::deny(format!("table name {table:?} is not a plain identifier")));
        }
        let (ok, rules) = self.enforce_ex(&[&who.name, &who.department, table, "*", "*", "*", "read"])?;
        if !ok {
            let reason = match rules.iter().find(|r| r.is_deny()) {
                Some(r) => format!("explicitly denied by {}", r.describe()),
                None => format!("no rule grants {} ({}) read on {table}", who.name, who.department),
            };
            let mut d = TableDecision::deny(reason);
            d.matched_rules = rules.iter().map(Rule::describe).collect();
            return Ok(d);
        }
        let mut matched = Vec::new();
        // Rows: OR of the conditions of every allowing read rule.
        let mut disjuncts: Vec<Expr> = Vec::new();
        let mut all_rows = false;
        // (condition, the only columns it shows) per read rule.
        let mut reads: Vec<(Option<Expr>, Option<&Vec<String>>)> = Vec::new();
        for r in rules.iter().filter(|r| !r.is_deny()) {
            if let RuleKind::Read(cond) = &r.kind {
                let (e, notes) = cond.to_expr(who, columns);
                let mut desc = r.describe();
                for n in notes {
                    desc.push_str(&format!(" [{n}]"));
                }
                let limit = self.inner.grant_columns.get(r.sub());
                if let Some(l) = limit {
                    desc.push_str(&format!(" [columns: {}]", l.join(", ")));
                }
                matched.push(desc);
                reads.push((e.clone(), limit));
                match e {
                    None => all_rows = true,
                    Some(e) => disjuncts.push(e),
                }
            }
        }
        let row_filter = if all_rows {
            None
        } else {
            let mut it = disjuncts.into_iter();
            // allowed ⇒ at least one read rule matched; an empty set would be a bug → no rows.
            let first = it.next().unwrap_or(datafusion::logical_expr::lit(false));
            Some(it.fold(first, |acc, e| acc.or(e)))
        };
        // Columns: one casbin call each.
        let mut cols = BTreeMap::new();
        let mut column_conditions = BTreeMap::new();
        let mut reasons = Vec::new();
        for c in columns {
            let (mut action, mut why) = self.column_action(who, table, c)?;
            // A column-limited grant: the column shows only on the rows of
            // the read rules that do not leave it out.
            if reads.iter().any(|(_, l)| l.is_some()) {
                let covering: Vec<&Option<Expr>> =
                    reads.iter().filter(|(_, l)| l.is_none_or(|l| l.contains(&c.name))).map(|(e, _)| e).collect();
                if covering.is_empty() {
                    action = ColumnAction::Deny;
                    why = "outside every column-limited grant that admits rows".into();
                } else if covering.len() < reads.len() && covering.iter().all(|e| e.is_some()) {
                    let mut it = covering.into_iter().flatten().cloned();
                    let first = it.next().expect("not empty");
                    let cond = it.fold(first, |acc, e| acc.or(e));
                    why.push_str(&format!("; only where {cond}"));
                    column_conditions.insert(c.name.clone(), cond);
                }
            }
            reasons.push(format!("{}: {} ({why})", c.name, action));
            cols.insert(c.name.clone(), action);
        }
        matched.extend(reasons);
        Ok(TableDecision {
            allowed: true,
            row_filter,
            columns: cols,
            column_conditions,
            matched_rules: matched,
            reason: format!("read granted on {table}"),
        })
    }

    /// Resolve one column: casbin verdict (deny-by-default, explicit deny wins),
    /// then per role the most specific matched rule, then across roles the
    /// least restrictive action (roles add privileges).
    fn column_action(&self, who: &Principal, table: &str, c: &ColumnMeta) -> Result<(ColumnAction, String), String> {
        let sem = c.semantic.as_deref().unwrap_or("-");
        if !is_ident(&c.name) || !is_ident(&c.sensitivity) || !is_ident(sem) {
            return Ok((ColumnAction::Deny, "column metadata is not a plain identifier".into()));
        }
        let (ok, rules) =
            self.enforce_ex(&[&who.name, &who.department, table, &c.name, &c.sensitivity, sem, "column"])?;
        if !ok {
            return Ok(match rules.iter().find(|r| r.is_deny()) {
                Some(r) => (ColumnAction::Deny, format!("explicitly denied by {}", r.describe())),
                None => (ColumnAction::Deny, "no column rule matches: denied by default".into()),
            });
        }
        // Group by role (p.sub): within a role the most specific rule wins
        // (column name > semantic > sensitivity > *, then exact table > prefix);
        // ties within a role → the more restrictive.
        let mut per_role: BTreeMap<&str, (u8, usize, ColumnAction, &Rule)> = BTreeMap::new();
        for r in rules.iter().filter(|r| !r.is_deny()) {
            let RuleKind::Column { selector, action } = &r.kind else { continue };
            let a = action.resolve(c);
            let spec = (selector.specificity(), r.obj_specificity());
            match per_role.get(r.sub()) {
                Some((s, o, prev, _))
                    if (*s, *o) > spec || ((*s, *o) == spec && prev.restrictiveness() >= a.restrictiveness()) => {}
                _ => {
                    per_role.insert(r.sub(), (spec.0, spec.1, a, r));
                }
            }
        }
        let Some((_, _, mut action, rule)) =
            per_role.values().min_by_key(|(_, _, a, _)| a.restrictiveness()).map(|(s, o, a, r)| (*s, *o, *a, *r))
        else {
            return Ok((ColumnAction::Deny, "no column rule matches: denied by default".into()));
        };
        let mut why = format!("by {}", rule.describe());
        if action == ColumnAction::HashToken && !self.masks.has_token_key() {
            action = ColumnAction::Null;
            why.push_str("; no token key configured (LIANQIN_TOKEN_KEY), so NULL");
        }
        Ok((action, why))
    }

    /// Human-readable account of which rules apply to `who` on `table` and why
    /// (for `lianqin policy explain`).
    pub fn explain(&self, who: &Principal, table: &str, columns: &[ColumnMeta]) -> String {
        let d = self.decide_sync(who, table, columns);
        let mut s = String::new();
        s.push_str(&format!(
            "user {} (department {}, roles {:?}, divisions {:?}, stations {:?}{})\n",
            who.name,
            who.department,
            who.roles,
            who.divisions,
            who.stations,
            if who.admin { ", admin" } else { "" }
        ));
        s.push_str(&format!("policy version {}\n", self.version()));
        s.push_str(&format!("table {table}: {}\n", if d.allowed { "ALLOWED" } else { "DENIED" }));
        s.push_str(&format!("  reason: {}\n", d.reason));
        match (&d.row_filter, d.allowed) {
            (_, false) => {}
            (None, true) => s.push_str("  rows: all (a matched read rule has condition *)\n"),
            (Some(f), true) => s.push_str(&format!("  rows: {f}\n")),
        }
        if !d.matched_rules.is_empty() {
            s.push_str("  rules:\n");
            for r in &d.matched_rules {
                s.push_str(&format!("    {r}\n"));
            }
        }
        s.push_str("  combination: a row is visible if ANY matched read rule admits it (OR); a column gets, per role, its most specific rule, then the least restrictive across roles; an explicit deny wins; no rule = deny\n");
        s
    }

    /// Whether `who` may run administrative statements (DDL, DML, COPY, SET,
    /// information_schema).
    pub fn is_admin(&self, who: &Principal) -> bool {
        self.principal(&who.name).map(|p| p.admin && p.department == who.department).unwrap_or(false)
    }

    /// Convenience for the query engine: check the statement kind, then rewrite
    /// every table scan with `columns_of(table)` as the column metadata.
    ///
    /// Admin DDL/DML/SET plans are returned unchanged; everything else goes
    /// through [`crate::enforce`]. Non-administrators get plain `EXPLAIN`
    /// only ([`crate::check_explain`]): no ANALYZE, VERBOSE or statistics,
    /// which would count the rows before the row filter.
    pub fn secure_plan(
        &self,
        who: &Principal,
        plan: LogicalPlan,
        columns_of: &dyn Fn(&str) -> Vec<ColumnMeta>,
    ) -> Result<LogicalPlan, PolicyError> {
        let admin = self.is_admin(who);
        crate::enforce::check_plan(&plan, admin)?;
        crate::enforce::check_explain(&plan, admin)?;
        if admin && !crate::enforce::is_query(&plan) {
            return Ok(plan);
        }
        let decide = |t: &str| self.decide_sync(who, t, &columns_of(t));
        crate::enforce::enforce(plan, &decide, self.mask_functions())
    }
}
