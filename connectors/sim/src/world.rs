//! The simulated sources' state: every record of every HTTP source (current version only, the
//! sources themselves keep no history), the env files written so far, and the simulated clock.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::cmp::Ordering;

use crate::data::{self, CATS, Cat, DIVISIONS, Division, VIOLATIONS, fill, pick, weighted};
use crate::geo::{gcj02_to_bd09, round6, wgs84_to_gcj02};
use crate::ids::{USCC_ALPHABET, citizen_id_check_char, org_code_check_char, uscc_check_char};
use crate::{BrokenRecord, ComplaintRow, EnvRow, FlaggedRecord, SimConfig};

/// 110 incident stages (jqzt), in order (clause 6.4.2 matter stages 接警 → 总结).
pub const INCIDENT_STAGES: [&str; 5] = ["接警", "研判", "处置", "复盘", "总结"];
/// 12345 ticket statuses, in order.
pub const TICKET_STAGES: [&str; 5] = ["受理", "派单", "办理", "办结", "回访"];
/// Law-enforcement case stages, in order.
pub const CASE_STAGES: [&str; 5] = ["立案", "调查", "处罚决定", "执行", "结案"];

/// Which HTTP source a record belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Src {
    Police110,
    Hotline12345,
    Market,
    LawEnforcement,
}

impl Src {
    pub fn name(self) -> &'static str {
        match self {
            Src::Police110 => "police_110",
            Src::Hotline12345 => "hotline_12345",
            Src::Market => "market",
            Src::LawEnforcement => "law_enforcement",
        }
    }
}

/// One served record (its current version).
#[derive(Clone, Debug)]
pub(crate) struct Rec {
    /// Business key; `None` only for the deliberately broken 110 item without jjdbh.
    pub key: Option<String>,
    /// updated_at as local (+08:00) time.
    pub updated_at: NaiveDateTime,
    /// Index into the source's stage list (0 for the market register, which has no stages).
    pub stage: usize,
    /// Why the record is broken (it is still served as-is).
    pub broken: Option<&'static str>,
    /// A secondary field the hub cannot read, and why: the record is accepted
    /// with that field NULL and the flag `type.<field>` (it is served as-is).
    pub flagged: Option<(&'static str, &'static str)>,
    /// A planted record with a known timeline (see [`planted_tickets`]); it never advances.
    pub planted: Option<crate::PlantedRecord>,
    /// The JSON object served.
    pub value: Value,
    /// Values revealed by later stages (ticket satisfaction, case penalty amount).
    pub hidden: Value,
}

impl Rec {
    pub fn sort_key(&self) -> (NaiveDateTime, &str) {
        (self.updated_at, self.key.as_deref().unwrap_or(""))
    }
}

pub(crate) fn cmp_rec(a: &Rec, b: &Rec) -> Ordering {
    a.sort_key().cmp(&b.sort_key())
}

/// Format as `YYYY-MM-DD HH:MM:SS` (110, 12345).
pub(crate) fn fmt_local(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Format as ISO-8601 with +08:00 (market, law enforcement, complaints).
pub(crate) fn fmt_iso(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+08:00").to_string()
}

/// All the mutable state behind the servers.
pub(crate) struct World {
    pub incidents: Vec<Rec>,
    pub tickets: Vec<Rec>,
    pub enterprises: Vec<Rec>,
    pub cases: Vec<Rec>,
    pub env_rows: Vec<EnvRow>,
    pub complaints: Vec<ComplaintRow>,
    pub file_broken: Vec<BrokenRecord>,
    /// The simulated clock: the latest updated_at handed out by `advance`.
    pub clock: NaiveDateTime,
    /// Env batches written so far.
    pub batches: usize,
    /// Env CSV files written so far (numbers file names across batches).
    pub csv_files: usize,
    /// Complaints written so far (numbers complaint_no across batches).
    pub complaint_seq: usize,
    /// Round-robin cursor over the three staged sources for `advance`.
    pub advance_cursor: usize,
    /// Who is who: `<source>:<key>` → person (see [`crate::identity::overlay`]).
    pub person_of: std::collections::BTreeMap<String, usize>,
    /// Which reports are one incident: matter id → incident (see [`crate::joint::overlay`]).
    pub incident_of: std::collections::BTreeMap<String, usize>,
}

fn base_time(month: u32, day: u32, hour: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2025, month, day).and_then(|d| d.and_hms_opt(hour, 0, 0)).unwrap_or_default()
}

/// A sorted timeline of `n` timestamps starting at `start`, with deliberate ties: every record at
/// index ≡ 1 (mod 9) shares the previous one's timestamp, and ~20% more ties at random.
fn timeline(rng: &mut StdRng, n: usize, start: NaiveDateTime, max_gap_min: i64) -> Vec<NaiveDateTime> {
    let mut out = Vec::with_capacity(n);
    let mut t = start;
    for i in 0..n {
        if i > 0 && (i % 9 == 1 || rng.random_bool(0.2)) {
            out.push(t);
            continue;
        }
        t += Duration::minutes(rng.random_range(1..=max_gap_min)) + Duration::seconds(rng.random_range(0..60));
        out.push(t);
    }
    out
}

/// A stage index with a realistic spread (most records early, some finished).
fn initial_stage(rng: &mut StdRng) -> usize {
    weighted(rng, &[(0usize, 25), (1, 25), (2, 25), (3, 15), (4, 10)], 0)
}

pub(crate) fn sub_rng(seed: u64, salt: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// A GB 11643 citizen ID for the Huzhou area; `valid == false` gets a wrong check character.
pub(crate) fn citizen_id(rng: &mut StdRng, valid: bool) -> String {
    let area = pick(rng, &["330502", "330503", "330521", "330522", "330523", "330501"]);
    let birth =
        NaiveDate::from_ymd_opt(rng.random_range(1950..=2003), rng.random_range(1..=12), rng.random_range(1..=28))
            .unwrap_or_default();
    let seq: u32 = rng.random_range(1..1000);
    let first17 = format!("{area}{}{seq:03}", birth.format("%Y%m%d"));
    let check = citizen_id_check_char(&first17).unwrap_or('0');
    let check = if valid {
        check
    } else {
        let choices = b"0123456789X";
        let pos = choices.iter().position(|&c| char::from(c) == check).unwrap_or(0);
        char::from(choices[(pos + 1 + rng.random_range(0..choices.len() - 1)) % choices.len()])
    };
    format!("{first17}{check}")
}

/// How a generated USCC is made.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum UsccKind {
    Valid,
    /// Final (position 18) check character wrong.
    BadOuter,
    /// Embedded GB 11714 organisation-code check (position 17) wrong; final check recomputed so it passes.
    BadOrg,
}

pub(crate) fn uscc(rng: &mut StdRng, org_type: char, division: &str, kind: UsccKind) -> String {
    let mut org8 = String::new();
    if rng.random_bool(0.6) {
        org8.push_str("MA2");
        for _ in 0..5 {
            org8.push(char::from(USCC_ALPHABET[rng.random_range(0..USCC_ALPHABET.len())]));
        }
    } else {
        for _ in 0..8 {
            org8.push(char::from(b'0' + rng.random_range(0..10u8)));
        }
    }
    let org_check = org_code_check_char(&org8).unwrap_or('0');
    let org_check = if kind == UsccKind::BadOrg {
        let alts = b"0123456789X";
        let pos = alts.iter().position(|&c| char::from(c) == org_check).unwrap_or(0);
        char::from(alts[(pos + 1 + rng.random_range(0..alts.len() - 1)) % alts.len()])
    } else {
        org_check
    };
    let first17 = format!("9{org_type}{division}{org8}{org_check}");
    let check = uscc_check_char(&first17).unwrap_or('0');
    let check = if kind == UsccKind::BadOuter {
        let pos = USCC_ALPHABET.iter().position(|&c| char::from(c) == check).unwrap_or(0);
        char::from(USCC_ALPHABET[(pos + 1 + rng.random_range(0..USCC_ALPHABET.len() - 1)) % USCC_ALPHABET.len()])
    } else {
        check
    };
    format!("{first17}{check}")
}

/// Address with 区/县 + 镇/街道 + 村/路; a share omit the province/city (domain.md §9.3).
fn address(rng: &mut StdRng, d: &Division) -> (String, &'static str, &'static str) {
    let town = pick(rng, d.towns);
    let village = pick(rng, d.villages);
    let prefix = match rng.random_range(0..10) {
        0..=1 => "浙江省湖州市",
        2..=7 => "湖州市",
        _ => "",
    };
    let tail = if rng.random_bool(0.5) {
        format!("{village}{}号", rng.random_range(1..200))
    } else {
        format!("{}{}号", pick(rng, d.roads), rng.random_range(1..500))
    };
    (format!("{prefix}{}{town}{tail}", d.name), town, village)
}

fn division(rng: &mut StdRng) -> &'static Division {
    let i = weighted(rng, &[(0usize, 24), (1, 18), (2, 18), (3, 22), (4, 18)], 0);
    &DIVISIONS[i % DIVISIONS.len()]
}

fn template_vars(
    rng: &mut StdRng,
    d: &Division,
    town: &str,
    village: &str,
    plate: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("{water}", pick(rng, d.waters).to_string()),
        ("{hill}", pick(rng, d.hills).to_string()),
        ("{town}", town.to_string()),
        ("{village}", village.to_string()),
        ("{road}", pick(rng, d.roads).to_string()),
        ("{n}", rng.random_range(2..30).to_string()),
        ("{plate}", plate.to_string()),
    ]
}

fn fill_vars(t: &str, vars: &[(&'static str, String)]) -> String {
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    fill(t, &refs)
}

fn gen_incidents(cfg: &SimConfig) -> Vec<Rec> {
    let mut rng = sub_rng(cfg.seed, 110);
    // The handling result (处理结果) has its own stream, so adding it left every other field as it was.
    let mut results = sub_rng(cfg.seed, 1101);
    let total = cfg.incidents + 2;
    let times = timeline(&mut rng, total, base_time(3, 1, 8), 45);
    // The two planted items sit at fixed positions in the timeline: one
    // broken (no key), one with a longitude the hub flags.
    let missing_key_at = total / 3;
    let bad_jd_at = (2 * total) / 3;
    let mut out = Vec::with_capacity(total);
    for (i, updated_at) in times.into_iter().enumerate() {
        let d = division(&mut rng);
        let cat = weighted(&mut rng, &CATS, Cat::IllegalFishing);
        let (addr, town, village) = address(&mut rng, d);
        let plate = data::plate(&mut rng);
        let vars = template_vars(&mut rng, d, town, village, &plate);
        let text_t = pick(&mut rng, cat.police_texts());
        let bjnr = fill_vars(text_t, &vars);
        let cph = if text_t.contains("{plate}") || rng.random_bool(0.25) { plate } else { String::new() };
        let stage = initial_stage(&mut rng);
        let lag_min = match stage {
            0 => rng.random_range(0..10),
            1 => rng.random_range(10..60),
            2 => rng.random_range(60..360),
            3 => rng.random_range(1440..4320),
            _ => rng.random_range(4320..14400),
        };
        let bjsj = updated_at - Duration::minutes(lag_min);
        let (wlng, wlat) = data::point_in(&mut rng, d);
        let (glng, glat) = wgs84_to_gcj02(wlng, wlat);
        let id_valid = !rng.random_bool(0.04);
        let jjdbh = format!("J{}{}{:05}", d.code, bjsj.format("%Y%m%d"), i + 1);
        let mut v = json!({
            "jjdbh": jjdbh,
            "bjsj": fmt_local(bjsj),
            "bjnr": bjnr,
            "afdz": addr,
            "xzqh": d.code,
            "jd": round6(glng),
            "wd": round6(glat),
            "zbx": "GCJ-02",
            "ajlb": cat.police_label(),
            "jqzt": INCIDENT_STAGES[stage],
            "bjrxm": data::person_name(&mut rng),
            "bjrsfzh": citizen_id(&mut rng, id_valid),
            "bjrdh": data::phone(&mut rng),
            "cph": cph,
            "gxdw": pick(&mut rng, d.stations),
            "updated_at": fmt_local(updated_at),
        });
        // 处理结果, known from 复盘 on: what the incident became (Appendix B).
        let cljg = weighted(
            &mut results,
            &[("行政案件", 55), ("刑事案件", 10), ("不予立案", 25), ("移交其他部门", 10)],
            "行政案件",
        );
        if stage >= 3 {
            v["cljg"] = json!(cljg);
        }
        let mut key = Some(jjdbh);
        let mut broken = None;
        let mut flagged = None;
        if i == missing_key_at {
            if let Some(o) = v.as_object_mut() {
                o.remove("jjdbh");
            }
            key = None;
            broken = Some("missing jjdbh (the record key)");
        } else if i == bad_jd_at {
            v["jd"] = json!("东经120度");
            flagged = Some(("jd", "jd is text (\"东经120度\"), whole degrees: not a position"));
        }
        let hidden = json!({ "cljg": cljg });
        out.push(Rec { key, updated_at, stage, broken, flagged, planted: None, value: v, hidden });
    }
    out.sort_by(cmp_rec);
    out
}

fn satisfaction(rng: &mut StdRng) -> &'static str {
    weighted(rng, &[("满意", 72), ("基本满意", 18), ("不满意", 10)], "满意")
}

fn gen_tickets(cfg: &SimConfig) -> Vec<Rec> {
    let mut rng = sub_rng(cfg.seed, 12345);
    // Handlers (承办人) come from their own stream, so adding them left every other field as it was.
    let mut handlers = sub_rng(cfg.seed, 12346);
    let times = timeline(&mut rng, cfg.tickets, base_time(3, 1, 9), 50);
    let mut out = Vec::with_capacity(cfg.tickets);
    for (i, updated_at) in times.into_iter().enumerate() {
        let d = division(&mut rng);
        let cat = weighted(&mut rng, &CATS, Cat::Pollution);
        let (addr, town, village) = address(&mut rng, d);
        let plate = data::plate(&mut rng);
        let vars = template_vars(&mut rng, d, town, village, &plate);
        let (titles, contents) = cat.hotline_texts();
        let title = fill_vars(pick(&mut rng, titles), &vars);
        let content = fill_vars(pick(&mut rng, contents), &vars);
        let stage = initial_stage(&mut rng);
        let lag_h = match stage {
            0 => rng.random_range(0..2),
            1 => rng.random_range(2..24),
            2 => rng.random_range(24..96),
            3 => rng.random_range(96..240),
            _ => rng.random_range(240..400),
        };
        let accept = updated_at - Duration::hours(lag_h) - Duration::minutes(rng.random_range(0..60));
        let handle_days = *[3i64, 5, 10, 15].get(rng.random_range(0..4)).unwrap_or(&5);
        let deadline = accept + Duration::days(handle_days);
        let (wlng, wlat) = data::point_in(&mut rng, d);
        let (glng, glat) = wgs84_to_gcj02(wlng, wlat);
        let (blng, blat) = gcj02_to_bd09(glng, glat);
        let sat = satisfaction(&mut rng);
        let finish = if stage >= 3 {
            Some(updated_at - Duration::hours(if stage == 4 { rng.random_range(24..72) } else { 0 }))
        } else {
            None
        };
        let ticket_no = format!("HZ{}{:06}", accept.format("%Y%m%d"), i + 1);
        let v = json!({
            "ticket_no": ticket_no,
            "accept_time": fmt_local(accept),
            "channel": weighted(&mut rng, &[("电话", 50), ("微信", 20), ("浙里办", 18), ("网站", 12)], "电话"),
            "appeal_type": weighted(&mut rng, &[("投诉", 60), ("举报", 20), ("求助", 10), ("咨询", 5), ("建议", 5)], "投诉"),
            "title": title,
            "content": content,
            "address": addr,
            "division": d.code,
            "lng": round6(blng),
            "lat": round6(blat),
            "coord": "BD-09",
            "caller_name": data::person_name(&mut rng),
            "caller_phone": data::phone(&mut rng),
            "status": TICKET_STAGES[stage],
            "handling_dept": cat.handling_dept(d),
            "deadline": fmt_local(deadline),
            "finish_time": finish.map(fmt_local),
            "reply": finish.map(|_| reply_text(cat)),
            "callback_time": if stage == 4 { Some(fmt_local(updated_at)) } else { None },
            "satisfaction": if stage == 4 { Some(sat) } else { None },
            "handler": data::person_name(&mut handlers),
            "original_ticket_no": null,
            "updated_at": fmt_local(updated_at),
        });
        out.push(Rec {
            key: Some(ticket_no),
            updated_at,
            stage,
            broken: None,
            flagged: None,
            planted: None,
            value: v,
            hidden: json!({ "satisfaction": sat, "reply": reply_text(cat) }),
        });
    }
    if cfg.tickets > 0 {
        out.extend(planted_tickets());
    }
    out.sort_by(cmp_rec);
    out
}

/// One planted 12345 ticket: (ticket no, accepted, finished, called back, satisfaction, status
/// index, original ticket no, handler, why, callback due worked out by hand, flag).
type PlantedTicket = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    usize,
    Option<&'static str>,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

/// 12345 tickets with known timelines around the 2025 Spring Festival (days off 01-28 … 02-04,
/// make-up working days Sunday 01-26 and Saturday 02-08) and in 2024, whose holiday notice is
/// not embedded. Their callback deadlines were worked out by hand from the State Council
/// notice, not by the hub's calendar. They are dated before the generated window (so
/// `advance`'s clock and incremental sync are unaffected) and never advance.
const PLANTED_TICKETS: &[PlantedTicket] = &[
    (
        "HZ20250124990001",
        "2025-01-24 09:30:00",
        Some("2025-01-27 16:00:00"),
        Some("2025-02-06 10:00:00"),
        Some("满意"),
        4,
        None,
        "沈建国",
        "finished on the last working day before the Spring Festival: due 3 working days after the holiday; called back in time",
        Some("2025-02-07 16:00:00"),
        None,
    ),
    (
        "HZ20250125990002",
        "2025-01-25 10:00:00",
        Some("2025-01-26 11:00:00"),
        Some("2025-02-08 09:30:00"),
        Some("不满意"),
        4,
        None,
        "姚明华",
        "finished on the make-up working Sunday 01-26 (which does not count itself); called back on the make-up Saturday 02-08, after the deadline; dissatisfied",
        Some("2025-02-06 11:00:00"),
        None,
    ),
    (
        "HZ20250207990003",
        "2025-02-07 14:00:00",
        Some("2025-02-08 10:00:00"),
        None,
        None,
        3,
        None,
        "钱丽萍",
        "finished on the make-up working Saturday 02-08; never called back (overdue)",
        Some("2025-02-12 10:00:00"),
        None,
    ),
    (
        "HZ20241216990004",
        "2024-12-16 09:00:00",
        Some("2024-12-20 15:00:00"),
        None,
        None,
        3,
        None,
        "陆海峰",
        "finished in 2024, a year whose holiday notice is not embedded: no deadline, flagged",
        None,
        Some("calendar.callback_due"),
    ),
    (
        "HZ20250210990005",
        "2025-02-10 09:00:00",
        None,
        None,
        None,
        2,
        Some("HZ20250125990002"),
        "吴晓燕",
        "re-handling (重办) of the dissatisfied HZ20250125990002 by another handler",
        None,
        None,
    ),
];

fn planted_tickets() -> Vec<Rec> {
    let local = |t: &str| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").unwrap_or_default();
    // Each complaint is about its own spot on one road; a re-handling about its original's.
    let spot = |no: &str| PLANTED_TICKETS.iter().position(|t| t.0 == no).unwrap_or(0) * 48 + 18;
    PLANTED_TICKETS
        .iter()
        .map(|&(no, accept, finish, callback, sat, stage, original, handler, why, due, flag)| {
            let updated = callback.or(finish).unwrap_or(accept);
            let address = format!("湖州市吴兴区织里镇大港路{}号", spot(original.unwrap_or(no)));
            let value = json!({
                "ticket_no": no,
                "accept_time": accept,
                "channel": "电话",
                "appeal_type": "投诉",
                "title": "河道边有人倾倒建筑垃圾",
                "content": "市民反映吴兴区织里镇河道边有人倾倒建筑垃圾，请尽快处理",
                "address": address,
                "division": "330502",
                "lng": 120.274915,
                "lat": 30.843182,
                "coord": "BD-09",
                "caller_name": "张伟",
                "caller_phone": "13867250001",
                "status": TICKET_STAGES[stage],
                "handling_dept": "吴兴区综合行政执法局",
                "deadline": null,
                "finish_time": finish,
                "reply": finish.map(|_| reply_text(Cat::WasteDumping)),
                "callback_time": callback,
                "satisfaction": sat,
                "handler": handler,
                "original_ticket_no": original,
                "updated_at": updated,
            });
            Rec {
                key: Some(no.to_string()),
                updated_at: local(updated),
                stage,
                broken: None,
                flagged: None,
                planted: Some(crate::PlantedRecord {
                    source: "hotline_12345",
                    key: no.to_string(),
                    why,
                    closed_at: finish,
                    callback_due: due,
                    callback_at: callback,
                    flag: flag.map(str::to_string),
                }),
                value,
                hidden: Value::Null,
            }
        })
        .collect()
}

pub(crate) fn reply_text(cat: Cat) -> &'static str {
    match cat {
        Cat::IllegalFishing => "经现场巡查，已查获电鱼工具并移交渔政部门处理，后续将加强夜间巡查。",
        Cat::SandMining => "经核查，已责令停止采砂作业，采砂船已扣押，案件移交水利部门处理。",
        Cat::TreeFelling => "经核查，砍伐行为未办理林木采伐许可证，已立案调查。",
        Cat::WasteDumping => "已责令清运倾倒的建筑垃圾，并对运输车辆依法处罚。",
        Cat::Hunting => "已拆除捕鸟网和猎夹，放生被困鸟类，加强巡护。",
        Cat::FarmlandOccupation => "经核查，属违法占用耕地，已责令恢复原状并立案查处。",
        Cat::Pollution => "经现场检查和采样监测，已责令企业整改，并依法立案调查。",
    }
}

/// The enterprise register; `invalid` lists which indexes get a bad check character and how.
fn gen_enterprises(cfg: &SimConfig) -> Vec<Rec> {
    let mut rng = sub_rng(cfg.seed, 32100);
    let n = cfg.enterprises;
    // ~10% invalid (index ≡ 3 mod 10), and never fewer than two when there are two records.
    let mut invalid: Vec<usize> = (0..n).filter(|i| i % 10 == 3).collect();
    let mut next = 0;
    while invalid.len() < 2.min(n) {
        if !invalid.contains(&next) {
            invalid.push(next);
        }
        next += 1;
    }
    invalid.sort_unstable();
    let times = timeline(&mut rng, n, base_time(1, 2, 9), 240);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    for (i, updated_at) in times.into_iter().enumerate() {
        let d = division(&mut rng);
        let org_type = weighted(&mut rng, &[('1', 80), ('2', 12), ('3', 8)], '1');
        let kind = match invalid.iter().position(|&x| x == i) {
            Some(p) if p % 2 == 0 => UsccKind::BadOuter,
            Some(_) => UsccKind::BadOrg,
            None => UsccKind::Valid,
        };
        let mut code = uscc(&mut rng, org_type, d.code, kind);
        while !seen.insert(code.clone()) {
            code = uscc(&mut rng, org_type, d.code, kind);
        }
        let ind = data::INDUSTRIES[rng.random_range(0..data::INDUSTRIES.len())];
        let (addr, town, village) = address(&mut rng, d);
        let legal_rep = data::person_name(&mut rng);
        let brand = pick(&mut rng, data::BRANDS);
        let (name, ent_type, capital) = match org_type {
            '2' => (
                format!("{}{town}{}{}", d.name, &legal_rep, ind.2),
                "个体工商户",
                format!("{}万元", [3, 5, 10, 20][rng.random_range(0..4)]),
            ),
            '3' => (
                format!("{}{village}{brand}{}专业合作社", d.short, ind.3),
                "农民专业合作社",
                format!("{}万元", [50, 100, 200][rng.random_range(0..3)]),
            ),
            _ => {
                let prefix = match rng.random_range(0..4) {
                    0 => "湖州".to_string(),
                    1 => "浙江".to_string(),
                    _ if d.name.ends_with('县') => d.name.to_string(),
                    _ => format!("湖州{}", d.short),
                };
                (
                    format!("{prefix}{brand}{}", ind.1),
                    "有限责任公司(自然人投资或控股)",
                    format!("{}万元人民币", [50, 100, 200, 500, 1000, 3000, 5000][rng.random_range(0..7)]),
                )
            }
        };
        let reg_date =
            NaiveDate::from_ymd_opt(rng.random_range(2003..=2024), rng.random_range(1..=12), rng.random_range(1..=28))
                .unwrap_or_default();
        let status = weighted(&mut rng, &[("存续", 70), ("在业", 18), ("吊销", 6), ("注销", 6)], "存续");
        let (lng, lat) = data::point_in(&mut rng, d);
        let v = json!({
            "uscc": code,
            "name": name,
            "legal_rep": legal_rep,
            "ent_type": ent_type,
            "reg_capital": capital,
            "address": addr,
            "division": d.code,
            "industry": ind.0,
            "status": status,
            "reg_date": reg_date.format("%Y-%m-%d").to_string(),
            "lng": round6(lng),
            "lat": round6(lat),
            "coord": "WGS-84",
            "updated_at": fmt_iso(updated_at),
        });
        out.push(Rec {
            key: Some(code),
            updated_at,
            stage: 0,
            broken: None,
            flagged: None,
            planted: None,
            value: v,
            hidden: Value::Null,
        });
    }
    out.sort_by(cmp_rec);
    out
}

fn gen_cases(cfg: &SimConfig, enterprises: &[Rec]) -> Vec<Rec> {
    let mut rng = sub_rng(cfg.seed, 4300);
    // Party phones from their own stream: the cases stay as they were.
    let mut phones = sub_rng(cfg.seed, 4301);
    let times = timeline(&mut rng, cfg.cases, base_time(3, 1, 10), 60);
    let mut out = Vec::with_capacity(cfg.cases);
    for (i, updated_at) in times.into_iter().enumerate() {
        let (viol, basis, lo, hi, company) = VIOLATIONS[rng.random_range(0..VIOLATIONS.len())];
        let link = !enterprises.is_empty() && rng.random_bool(if company { 0.95 } else { 0.6 });
        let (d, party_name, party_uscc, party_id, party_phone, lng, lat) = if link {
            let e = &enterprises[rng.random_range(0..enterprises.len())].value;
            let div = e["division"].as_str().unwrap_or("330502");
            let d = DIVISIONS.iter().find(|d| d.code == div).unwrap_or(&DIVISIONS[0]);
            let lng = e["lng"].as_f64().unwrap_or(120.1) + rng.random_range(-0.002..0.002);
            let lat = e["lat"].as_f64().unwrap_or(30.9) + rng.random_range(-0.002..0.002);
            (d, e["name"].as_str().unwrap_or_default().to_string(), Some(e["uscc"].clone()), None, None, lng, lat)
        } else {
            let d = division(&mut rng);
            let (lng, lat) = data::point_in(&mut rng, d);
            let id = if rng.random_bool(0.7) {
                let valid = !rng.random_bool(0.04);
                Some(citizen_id(&mut rng, valid))
            } else {
                None
            };
            let phone = phones.random_bool(0.8).then(|| data::phone(&mut phones));
            (d, data::person_name(&mut rng), None, id, phone, lng, lat)
        };
        let stage = initial_stage(&mut rng);
        let amount = (rng.random_range(lo..=hi) / 100) * 100;
        let inspect = updated_at
            - Duration::days(rng.random_range(0..(3 + 8 * stage as i64)))
            - Duration::hours(rng.random_range(0..8));
        let case_no = format!("湖{}综执立〔{}〕{:05}号", d.abbr, inspect.year(), i + 1);
        let v = json!({
            "case_no": case_no,
            "case_name": format!("{party_name}涉嫌{viol}案"),
            "violation": viol,
            "legal_basis": basis,
            "party_type": if party_uscc.is_some() { "单位" } else { "个人" },
            "party_name": party_name,
            "party_uscc": party_uscc,
            "party_id_card": party_id,
            "party_phone": party_phone,
            "amount": if stage >= 2 { json!(amount) } else { Value::Null },
            "stage": CASE_STAGES[stage],
            "agency": format!("{}综合行政执法局", d.name),
            "division": d.code,
            "inspect_time": fmt_iso(inspect),
            "lng": round6(lng),
            "lat": round6(lat),
            "coord": "WGS-84",
            "updated_at": fmt_iso(updated_at),
        });
        out.push(Rec {
            key: Some(case_no),
            updated_at,
            stage,
            broken: None,
            flagged: None,
            planted: None,
            value: v,
            hidden: json!({ "amount": amount }),
        });
    }
    out.sort_by(cmp_rec);
    out
}

impl World {
    pub fn generate(cfg: &SimConfig) -> World {
        let mut incidents = gen_incidents(cfg);
        let mut tickets = gen_tickets(cfg);
        let enterprises = gen_enterprises(cfg);
        let mut cases = gen_cases(cfg, &enterprises);
        // The people named in the records come from one identity world, so
        // the same citizen calls 110, 12345 and is a party to a case.
        let person_of = crate::identity::overlay(cfg.seed, &mut incidents, &mut tickets, &mut cases);
        // Some tickets and cases report an incident 110 took.
        let incident_of = crate::joint::overlay(cfg.seed, &incidents, &mut tickets, &mut cases);
        let latest = [&incidents, &tickets, &enterprises, &cases]
            .iter()
            .filter_map(|v| v.last().map(|r| r.updated_at))
            .max()
            .unwrap_or_else(|| base_time(3, 1, 8));
        // The clock starts an hour after the latest record; `advance` moves it a minute per call.
        let clock = latest + Duration::hours(1);
        World {
            incidents,
            tickets,
            enterprises,
            cases,
            env_rows: Vec::new(),
            complaints: Vec::new(),
            file_broken: Vec::new(),
            clock,
            batches: 0,
            csv_files: 0,
            complaint_seq: 0,
            advance_cursor: 0,
            person_of,
            incident_of,
        }
    }

    pub fn records(&self, src: Src) -> &[Rec] {
        match src {
            Src::Police110 => &self.incidents,
            Src::Hotline12345 => &self.tickets,
            Src::Market => &self.enterprises,
            Src::LawEnforcement => &self.cases,
        }
    }

    /// Move up to `n` records (round-robin over 110, 12345, cases; the least recently updated
    /// non-final record of each source that is not planted (broken or flagged) first) to their next stage. All records changed
    /// by one call share one new timestamp, one minute after the previous clock.
    pub fn advance(&mut self, n: usize) -> usize {
        let ts = self.clock + Duration::minutes(1);
        let mut changed = 0;
        let mut exhausted = [false; 3];
        while changed < n && !exhausted.iter().all(|e| *e) {
            let which = self.advance_cursor % 3;
            self.advance_cursor = self.advance_cursor.wrapping_add(1);
            if exhausted[which] {
                continue;
            }
            let recs = match which {
                0 => &mut self.incidents,
                1 => &mut self.tickets,
                _ => &mut self.cases,
            };
            let Some(rec) = recs.iter_mut().find(|r| {
                r.broken.is_none() && r.flagged.is_none() && r.planted.is_none() && r.stage + 1 < 5 && r.updated_at < ts
            }) else {
                exhausted[which] = true;
                continue;
            };
            rec.stage += 1;
            rec.updated_at = ts;
            match which {
                0 => {
                    rec.value["jqzt"] = json!(INCIDENT_STAGES[rec.stage]);
                    if rec.stage >= 3 {
                        rec.value["cljg"] = rec.hidden["cljg"].clone();
                    }
                    rec.value["updated_at"] = json!(fmt_local(ts));
                }
                1 => {
                    rec.value["status"] = json!(TICKET_STAGES[rec.stage]);
                    if rec.stage == 3 {
                        rec.value["finish_time"] = json!(fmt_local(ts));
                        rec.value["reply"] = rec.hidden["reply"].clone();
                    }
                    if rec.stage == 4 {
                        rec.value["callback_time"] = json!(fmt_local(ts));
                        rec.value["satisfaction"] = rec.hidden["satisfaction"].clone();
                    }
                    rec.value["updated_at"] = json!(fmt_local(ts));
                }
                _ => {
                    rec.value["stage"] = json!(CASE_STAGES[rec.stage]);
                    if rec.stage == 2 {
                        rec.value["amount"] = rec.hidden["amount"].clone();
                    }
                    rec.value["updated_at"] = json!(fmt_iso(ts));
                }
            }
            changed += 1;
        }
        if changed > 0 {
            self.clock = ts;
            self.incidents.sort_by(cmp_rec);
            self.tickets.sort_by(cmp_rec);
            self.cases.sort_by(cmp_rec);
        }
        changed
    }

    /// Records among the HTTP sources that are accepted with a flag.
    pub fn http_flagged(&self) -> Vec<FlaggedRecord> {
        let mut out = Vec::new();
        for src in [Src::Police110, Src::Hotline12345, Src::Market, Src::LawEnforcement] {
            for r in self.records(src) {
                if let (Some((field, why)), Some(key)) = (r.flagged, &r.key) {
                    out.push(FlaggedRecord {
                        source: src.name(),
                        key: key.clone(),
                        field,
                        flag: format!("type.{field}"),
                        why,
                    });
                }
            }
        }
        out
    }

    /// Planted records (known timelines) among the HTTP sources.
    pub fn http_planted(&self) -> Vec<crate::PlantedRecord> {
        [Src::Police110, Src::Hotline12345, Src::Market, Src::LawEnforcement]
            .iter()
            .flat_map(|s| self.records(*s))
            .filter_map(|r| r.planted.clone())
            .collect()
    }

    /// Broken records among the HTTP sources.
    pub fn http_broken(&self) -> Vec<BrokenRecord> {
        let mut out = Vec::new();
        for src in [Src::Police110, Src::Hotline12345, Src::Market, Src::LawEnforcement] {
            for r in self.records(src) {
                if let Some(why) = r.broken {
                    out.push(BrokenRecord {
                        source: src.name(),
                        key: r.key.clone(),
                        why,
                        file: None,
                        line: None,
                        raw: None,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{citizen_id_is_valid, uscc_is_valid, uscc_org_check_ok, uscc_outer_check_ok};

    #[test]
    fn generated_identifiers_check_as_intended() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..500 {
            assert!(uscc_is_valid(&uscc(&mut rng, '1', "330502", UsccKind::Valid)));
            let bad_outer = uscc(&mut rng, '1', "330502", UsccKind::BadOuter);
            assert!(!uscc_outer_check_ok(&bad_outer) && uscc_org_check_ok(&bad_outer));
            let bad_org = uscc(&mut rng, '2', "330523", UsccKind::BadOrg);
            assert!(uscc_outer_check_ok(&bad_org) && !uscc_org_check_ok(&bad_org));
            assert!(citizen_id_is_valid(&citizen_id(&mut rng, true)));
            assert!(!citizen_id_is_valid(&citizen_id(&mut rng, false)));
        }
    }

    #[test]
    fn tiny_configs_generate() {
        for n in 0..6 {
            let cfg = SimConfig { incidents: n, tickets: n, enterprises: n, cases: n, ..SimConfig::default() };
            let w = World::generate(&cfg);
            assert_eq!(w.incidents.len(), n + 2);
            assert_eq!(w.http_broken().len(), 1);
            assert_eq!(w.http_flagged().len(), 1);
            assert_eq!(w.enterprises.len(), n);
            let bad = w.enterprises.iter().filter(|r| !uscc_is_valid(r.key.as_deref().unwrap_or(""))).count();
            assert_eq!(bad, 2.min(n));
        }
    }

    #[test]
    fn advance_moves_to_next_stage_with_new_timestamp() {
        let mut w = World::generate(&SimConfig { incidents: 10, tickets: 10, cases: 10, ..SimConfig::default() });
        let before = w.clock;
        assert_eq!(w.advance(6), 6);
        assert!(w.clock > before);
        let moved = w.incidents.iter().chain(&w.tickets).chain(&w.cases).filter(|r| r.updated_at == w.clock).count();
        assert_eq!(moved, 6);
        // One call moves each record at most once; a few calls finish everything.
        assert!(w.advance(10_000) <= 10 + 10 + 10);
        for _ in 0..5 {
            w.advance(10_000);
        }
        assert_eq!(w.advance(1), 0);
        let generated = w.tickets.iter().filter(|r| r.planted.is_none());
        assert!(generated.clone().all(|r| r.stage == 4 && r.value["satisfaction"].is_string()));
        assert_eq!(generated.count(), 10);
        // Planted tickets keep their known timeline.
        for r in w.tickets.iter().filter(|r| r.planted.is_some()) {
            let p = PLANTED_TICKETS.iter().find(|p| Some(p.0) == r.key.as_deref()).expect("planted ticket");
            assert_eq!((r.stage, r.value["finish_time"].as_str()), (p.5, p.2));
        }
        assert_eq!(w.tickets.iter().filter(|r| r.planted.is_some()).count(), PLANTED_TICKETS.len());
        assert!(w.cases.iter().all(|r| r.value["amount"].is_number()));
    }
}
