//! Parsing and validation of `policy.csv` and `model.conf`, and the row-condition
//! mini-language.
//!
//! casbin only answers yes/no for one request tuple; the *payload* of a matched
//! rule (its row condition or its column action) lives in the `rule` field of
//! the policy line and is interpreted here.

use std::collections::HashMap;

use datafusion::logical_expr::{Expr, lit};
use datafusion::prelude::Column;

use crate::PolicyError;
use crate::principal::Principal;
use crate::{ColumnAction, ColumnMeta, MaskKind};

/// Names of the fields of a `p` line, in order. The model must declare exactly these.
pub(crate) const P_TOKENS: [&str; 7] = ["sub", "dom", "obj", "col", "act", "rule", "eft"];
/// Names of the fields of a request, in order.
pub(crate) const R_TOKENS: [&str; 7] = ["sub", "dom", "obj", "col", "sens", "sem", "act"];

/// Sensitivity labels, least to most sensitive (§7.1.1 涉密管理).
pub const SENSITIVITY_LABELS: [&str; 4] = ["public", "internal", "sensitive", "secret"];

/// A parsed `p` line.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// 1-based line in policy.csv.
    pub line: usize,
    /// The tokens as handed to casbin.
    pub tokens: Vec<String>,
    /// What the rule carries.
    pub kind: RuleKind,
}

impl Rule {
    pub fn sub(&self) -> &str {
        &self.tokens[0]
    }
    pub fn obj(&self) -> &str {
        &self.tokens[2]
    }
    pub fn is_deny(&self) -> bool {
        self.tokens[6] == "deny"
    }
    /// `policy.csv:12 p, role, dom, ...`
    pub fn describe(&self) -> String {
        format!("policy.csv:{} p, {}", self.line, self.tokens.join(", "))
    }
    /// Specificity of the object pattern: exact name beats a prefix pattern,
    /// longer prefixes beat shorter ones.
    pub fn obj_specificity(&self) -> usize {
        self.obj().find('*').unwrap_or(10_000)
    }
}

/// Payload of a rule, by action.
#[derive(Debug, Clone)]
pub(crate) enum RuleKind {
    /// `act = read`: grants the table; rows admitted by `cond`.
    Read(Condition),
    /// `act = column`: a column action for columns matching `selector`.
    Column { selector: Selector, action: RuleAction },
    /// `act = admin`: may run DDL/DML/SET and read information_schema.
    Admin,
}

/// Which columns a column rule targets (policy field `col`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selector {
    Any,
    Sensitivity(String),
    Semantic(String),
    Name(String),
}

impl Selector {
    /// Higher is more specific: name > semantic > sensitivity > any.
    pub fn specificity(&self) -> u8 {
        match self {
            Selector::Any => 0,
            Selector::Sensitivity(_) => 1,
            Selector::Semantic(_) => 2,
            Selector::Name(_) => 3,
        }
    }
}

/// Column action as written in a rule; `mask` is resolved per column semantic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RuleAction {
    Show,
    MaskAuto,
    Mask(MaskKind),
    Hash,
    Null,
    Deny,
}

impl RuleAction {
    pub fn resolve(&self, meta: &ColumnMeta) -> ColumnAction {
        match self {
            RuleAction::Show => ColumnAction::Show,
            RuleAction::MaskAuto => ColumnAction::MaskPartial(match meta.semantic.as_deref() {
                Some("citizen_id") => MaskKind::CitizenId,
                Some("phone") => MaskKind::Phone,
                _ => MaskKind::Keep { first: 1, last: 1 },
            }),
            RuleAction::Mask(k) => ColumnAction::MaskPartial(*k),
            RuleAction::Hash => ColumnAction::HashToken,
            RuleAction::Null => ColumnAction::Null,
            RuleAction::Deny => ColumnAction::Deny,
        }
    }
}

fn parse_action(s: &str) -> Result<RuleAction, String> {
    let parts: Vec<&str> = s.split(':').collect();
    match parts.as_slice() {
        ["show"] => Ok(RuleAction::Show),
        ["mask"] => Ok(RuleAction::MaskAuto),
        ["mask", "citizen_id"] => Ok(RuleAction::Mask(MaskKind::CitizenId)),
        ["mask", "phone"] => Ok(RuleAction::Mask(MaskKind::Phone)),
        ["mask", f, l] => {
            let first = f.parse::<usize>().map_err(|_| format!("bad mask width {f:?}"))?;
            let last = l.parse::<usize>().map_err(|_| format!("bad mask width {l:?}"))?;
            if first > 64 || last > 64 {
                return Err("mask widths must be at most 64".into());
            }
            Ok(RuleAction::Mask(MaskKind::Keep { first, last }))
        }
        ["hash"] => Ok(RuleAction::Hash),
        ["null"] => Ok(RuleAction::Null),
        ["deny"] => Ok(RuleAction::Deny),
        _ => Err(format!(
            "unknown column action {s:?} (expected show, mask, mask:citizen_id, mask:phone, mask:F:L, hash, null, deny)"
        )),
    }
}

fn parse_selector(s: &str) -> Result<Selector, String> {
    if s == "*" {
        return Ok(Selector::Any);
    }
    if let Some(l) = s.strip_prefix("sens:") {
        if !SENSITIVITY_LABELS.contains(&l) {
            return Err(format!("unknown sensitivity label {l:?} (expected one of {SENSITIVITY_LABELS:?})"));
        }
        return Ok(Selector::Sensitivity(l.to_string()));
    }
    if let Some(l) = s.strip_prefix("sem:") {
        if !is_ident(l) {
            return Err(format!("bad semantic name {l:?}"));
        }
        return Ok(Selector::Semantic(l.to_string()));
    }
    if !is_ident(s) {
        return Err(format!("bad column selector {s:?} (expected *, sens:<label>, sem:<semantic> or a column name)"));
    }
    Ok(Selector::Name(s.to_string()))
}

pub(crate) fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

/// A row condition: AND of atoms. Empty = all rows (`*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Condition {
    pub atoms: Vec<Atom>,
}

/// `column op value|value|...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Atom {
    pub column: String,
    pub op: Op,
    pub values: Vec<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `=`: column IN (values)
    Eq,
    /// `!=`: column NOT IN (values)
    Ne,
    /// `<=`: sensitivity rank at most the label
    Le,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Lit(String),
    /// `@dept`: the user's department
    Dept,
    /// `@divisions`: the user's divisions
    Divisions,
    /// `@stations`: the user's stations
    Stations,
}

/// Parse the row-condition language:
///
/// ```text
/// cond  := "*" | atom ( "&" atom )*
/// atom  := column ( "=" | "!=" | "<=" ) value ( "|" value )*
/// value := "@dept" | "@divisions" | "@stations" | literal
/// ```
pub(crate) fn parse_condition(s: &str) -> Result<Condition, String> {
    let s = s.trim();
    if s == "*" {
        return Ok(Condition { atoms: vec![] });
    }
    let mut atoms = Vec::new();
    for part in s.split('&') {
        let part = part.trim();
        let (column, op, rest) = if let Some(i) = part.find("!=") {
            (&part[..i], Op::Ne, &part[i + 2..])
        } else if let Some(i) = part.find("<=") {
            (&part[..i], Op::Le, &part[i + 2..])
        } else if let Some(i) = part.find('=') {
            (&part[..i], Op::Eq, &part[i + 1..])
        } else {
            return Err(format!("row condition {part:?} has no operator (=, != or <=)"));
        };
        let column = column.trim();
        if !is_ident(column) || column.contains('.') {
            return Err(format!("bad column name {column:?} in row condition"));
        }
        let mut values = Vec::new();
        for v in rest.split('|') {
            let v = v.trim();
            let val = match v {
                "@dept" => Value::Dept,
                "@divisions" => Value::Divisions,
                "@stations" => Value::Stations,
                _ if v.starts_with('@') => {
                    return Err(format!("unknown variable {v:?} (expected @dept, @divisions, @stations)"));
                }
                _ if v.is_empty() => return Err(format!("empty value in row condition {part:?}")),
                _ if v.contains(['\'', '"', ' ', '(', ')']) => {
                    return Err(format!("bad literal {v:?} in row condition"));
                }
                _ => Value::Lit(v.to_string()),
            };
            values.push(val);
        }
        if op == Op::Le {
            match values.as_slice() {
                [Value::Lit(l)] if SENSITIVITY_LABELS.contains(&l.as_str()) => {}
                _ => return Err(format!("`<=` takes one sensitivity label (one of {SENSITIVITY_LABELS:?})")),
            }
        }
        atoms.push(Atom { column: column.to_string(), op, values });
    }
    Ok(Condition { atoms })
}

impl Condition {
    /// Build the DataFusion predicate for this condition and this user.
    ///
    /// Returns `Ok(None)` when the condition admits every row. A condition that
    /// names a column the table lacks admits nothing (`false`): fail closed.
    pub fn to_expr(&self, who: &Principal, columns: &[ColumnMeta]) -> (Option<Expr>, Vec<String>) {
        let mut notes = Vec::new();
        let mut conj: Option<Expr> = None;
        for atom in &self.atoms {
            let e = if !columns.iter().any(|c| c.name == atom.column) {
                notes.push(format!("column {:?} absent from table: condition admits no rows", atom.column));
                lit(false)
            } else {
                atom.to_expr(who)
            };
            conj = Some(match conj {
                None => e,
                Some(c) => c.and(e),
            });
        }
        (conj, notes)
    }
}

impl Atom {
    fn to_expr(&self, who: &Principal) -> Expr {
        let mut vals: Vec<String> = Vec::new();
        for v in &self.values {
            match v {
                Value::Lit(s) => vals.push(s.clone()),
                Value::Dept => vals.push(who.department.clone()),
                Value::Divisions => vals.extend(who.divisions.iter().cloned()),
                Value::Stations => vals.extend(who.stations.iter().cloned()),
            }
        }
        let c = Expr::Column(Column::new_unqualified(self.column.clone()));
        match self.op {
            Op::Le => {
                let max = match self.values.first() {
                    Some(Value::Lit(l)) => SENSITIVITY_LABELS.iter().position(|x| x == l).unwrap_or(0),
                    _ => 0,
                };
                let labels = SENSITIVITY_LABELS[..=max].iter().map(|l| lit(*l)).collect();
                c.in_list(labels, false)
            }
            Op::Eq | Op::Ne => {
                if vals.is_empty() {
                    // `division=@divisions` for a user without divisions: no rows.
                    return lit(self.op == Op::Ne).and(c.is_not_null());
                }
                let negated = self.op == Op::Ne;
                if vals.len() == 1 {
                    let v = lit(vals.remove(0));
                    if negated { col_ne(c, v) } else { c.eq(v) }
                } else {
                    c.in_list(vals.into_iter().map(lit).collect(), negated)
                }
            }
        }
    }
}

fn col_ne(c: Expr, v: Expr) -> Expr {
    c.not_eq(v)
}

/// Parsed policy.csv.
#[derive(Debug, Default, Clone)]
pub(crate) struct PolicyFile {
    /// `p` rules keyed by their casbin tokens.
    pub rules: HashMap<Vec<String>, Rule>,
    /// Rules in file order.
    pub ordered: Vec<Rule>,
    /// `g` lines: (member, role, domain, line).
    pub groupings: Vec<(String, String, String, usize)>,
    /// Every role named anywhere (p subjects and g roles).
    pub roles: std::collections::BTreeSet<String>,
}

fn file_err(file: &str, line: usize, message: impl Into<String>) -> PolicyError {
    PolicyError::File { file: file.to_string(), line, message: message.into() }
}

fn check_domain(d: &str) -> Result<(), String> {
    if d == "*" || crate::codes::is_department(d) {
        Ok(())
    } else {
        Err(format!("unknown department {d:?} (expected * or one of {:?})", crate::codes::departments()))
    }
}

/// Parse and validate policy.csv. Errors name the line.
pub(crate) fn parse_policy(text: &str, file: &str) -> Result<PolicyFile, PolicyError> {
    let mut out = PolicyFile::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.contains('"') {
            return Err(file_err(file, line, "quotes are not supported; fields may not contain commas"));
        }
        let toks: Vec<String> = t.split(',').map(|s| s.trim().to_string()).collect();
        if toks.iter().any(|s| s.is_empty()) {
            return Err(file_err(file, line, "empty field"));
        }
        match toks[0].as_str() {
            "p" => {
                let f = &toks[1..];
                if f.len() != P_TOKENS.len() {
                    return Err(file_err(
                        file,
                        line,
                        format!("a p line has {} fields ({}), found {}", P_TOKENS.len(), P_TOKENS.join(", "), f.len()),
                    ));
                }
                let (sub, dom, obj, colf, act, rule, eft) = (&f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6]);
                if !is_ident(sub) {
                    return Err(file_err(file, line, format!("bad subject {sub:?}")));
                }
                check_domain(dom).map_err(|m| file_err(file, line, m))?;
                let obj_ok =
                    obj == "*" || obj.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '*');
                if !obj_ok || obj.matches('*').count() > 1 || (obj.contains('*') && !obj.ends_with('*')) {
                    return Err(file_err(
                        file,
                        line,
                        format!("bad table pattern {obj:?} (a name, or a prefix ending in *)"),
                    ));
                }
                if eft != "allow" && eft != "deny" {
                    return Err(file_err(file, line, format!("effect must be allow or deny, found {eft:?}")));
                }
                let kind = match act.as_str() {
                    "read" => {
                        if colf != "*" {
                            return Err(file_err(file, line, "a read rule must have col = *"));
                        }
                        RuleKind::Read(parse_condition(rule).map_err(|m| file_err(file, line, m))?)
                    }
                    "column" => {
                        let selector = parse_selector(colf).map_err(|m| file_err(file, line, m))?;
                        let action = parse_action(rule).map_err(|m| file_err(file, line, m))?;
                        RuleKind::Column { selector, action }
                    }
                    "admin" => {
                        if colf != "*" || rule != "*" {
                            return Err(file_err(file, line, "an admin rule must have col = * and rule = *"));
                        }
                        RuleKind::Admin
                    }
                    other => {
                        return Err(file_err(
                            file,
                            line,
                            format!("unknown action {other:?} (expected read, column or admin)"),
                        ));
                    }
                };
                out.roles.insert(sub.clone());
                let r = Rule { line, tokens: f.to_vec(), kind };
                if out.rules.contains_key(&r.tokens) {
                    return Err(file_err(file, line, "duplicate rule"));
                }
                out.rules.insert(r.tokens.clone(), r.clone());
                out.ordered.push(r);
            }
            "g" => {
                let f = &toks[1..];
                if f.len() != 3 {
                    return Err(file_err(
                        file,
                        line,
                        format!("a g line has 3 fields (member, role, department), found {}", f.len()),
                    ));
                }
                if !is_ident(&f[0]) || !is_ident(&f[1]) {
                    return Err(file_err(file, line, "bad role name"));
                }
                if f[2] == "*" {
                    return Err(file_err(file, line, "a g line needs a concrete department"));
                }
                check_domain(&f[2]).map_err(|m| file_err(file, line, m))?;
                out.roles.insert(f[0].clone());
                out.roles.insert(f[1].clone());
                out.groupings.push((f[0].clone(), f[1].clone(), f[2].clone(), line));
            }
            other => return Err(file_err(file, line, format!("unknown line type {other:?} (expected p or g)"))),
        }
    }
    Ok(out)
}

/// Check the model: sections present, the effect one casbin supports (an
/// unsupported effect would panic inside casbin at enforce time), and the
/// request/policy definitions this crate relies on.
pub(crate) fn check_model(text: &str, file: &str) -> Result<(), PolicyError> {
    let mut section = String::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.starts_with('[') {
            if !t.ends_with(']') {
                return Err(file_err(file, line, format!("bad section header {t:?}")));
            }
            section = t[1..t.len() - 1].to_string();
            let known = ["request_definition", "policy_definition", "role_definition", "policy_effect", "matchers"];
            if !known.contains(&section.as_str()) {
                return Err(file_err(file, line, format!("unknown section [{section}]")));
            }
            continue;
        }
        let Some((k, v)) = t.split_once('=') else {
            return Err(file_err(file, line, format!("expected `key = value`, found {t:?}")));
        };
        let (k, v) = (k.trim(), v.trim());
        if section.is_empty() {
            return Err(file_err(file, line, "entry outside any section"));
        }
        seen.insert(k.to_string(), line);
        let list = |v: &str| v.split(',').map(|s| s.trim().to_string()).collect::<Vec<_>>();
        match (section.as_str(), k) {
            ("request_definition", "r") => {
                if list(v) != R_TOKENS {
                    return Err(file_err(
                        file,
                        line,
                        format!("request definition must be `r = {}`", R_TOKENS.join(", ")),
                    ));
                }
            }
            ("policy_definition", "p") => {
                if list(v) != P_TOKENS {
                    return Err(file_err(
                        file,
                        line,
                        format!("policy definition must be `p = {}`", P_TOKENS.join(", ")),
                    ));
                }
            }
            ("role_definition", "g") => {
                if list(v) != ["_", "_", "_"] {
                    return Err(file_err(file, line, "role definition must be `g = _, _, _` (RBAC with domains)"));
                }
            }
            ("policy_effect", "e") => {
                let supported = [
                    "some(where (p.eft == allow))",
                    "some(where (p.eft == allow)) && !some(where (p.eft == deny))",
                    "!some(where (p.eft == deny))",
                ];
                if !supported.contains(&v) {
                    return Err(file_err(
                        file,
                        line,
                        format!("unsupported policy effect {v:?} (supported: {supported:?})"),
                    ));
                }
            }
            ("matchers", "m") => {
                if !v.contains("g(r.sub, p.sub, r.dom)") {
                    return Err(file_err(file, line, "the matcher must contain g(r.sub, p.sub, r.dom)"));
                }
            }
            _ => return Err(file_err(file, line, format!("unexpected key {k:?} in [{section}]"))),
        }
    }
    for k in ["r", "p", "g", "e", "m"] {
        if !seen.contains_key(k) {
            let last = text.lines().count().max(1);
            return Err(file_err(file, last, format!("missing `{k} = ...`")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse() {
        let c = parse_condition("department=@dept & division=@divisions|330500").unwrap();
        assert_eq!(c.atoms.len(), 2);
        assert_eq!(c.atoms[1].values, vec![Value::Divisions, Value::Lit("330500".into())]);
        assert!(parse_condition("*").unwrap().atoms.is_empty());
        assert!(parse_condition("department").is_err());
        assert!(parse_condition("department=@nope").is_err());
        assert!(parse_condition("sensitivity<=bogus").is_err());
        assert!(parse_condition("sensitivity<=internal").is_ok());
    }

    #[test]
    fn actions_parse() {
        assert_eq!(parse_action("mask:6:4").unwrap(), RuleAction::Mask(MaskKind::Keep { first: 6, last: 4 }));
        assert!(parse_action("reveal").is_err());
        assert_eq!(parse_selector("sens:secret").unwrap(), Selector::Sensitivity("secret".into()));
        assert!(parse_selector("sens:topsecret").is_err());
    }
}
