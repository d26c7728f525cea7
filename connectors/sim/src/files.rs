//! Env drop files: 生态环境局 water-monitoring CSV exports in GBK with CRLF, and 12369 complaint
//! JSON-lines in UTF-8. Each file is written under a hidden temporary name (`.<name>.tmp`) and
//! renamed into place, so a directory watcher never sees a half-written file.

use chrono::{Duration, NaiveDate, NaiveDateTime};
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::data::{self, DIVISIONS, POINTS, POLLUTION_TYPES, pick, weighted};
use crate::http::Shared;
use crate::world::{fmt_iso, fmt_local, sub_rng};
use crate::{BrokenRecord, ComplaintRow, EnvRow, SimError};

/// The CSV header, in column order.
pub(crate) const CSV_HEADER: [&str; 12] = [
    "监测点编号",
    "监测点名称",
    "水体名称",
    "采样时间",
    "溶解氧",
    "高锰酸盐指数",
    "氨氮",
    "总磷",
    "经度",
    "纬度",
    "目标水质类别",
    "所属区县",
];

/// Bytes inserted into the monitoring-point name of the broken CSV line; 0xFF is never valid
/// in GBK/GB18030 (nor in UTF-8).
const INVALID_GBK: [u8; 2] = [0xFF, 0xFE];

const ROMAN: [&str; 7] = ["", "Ⅰ", "Ⅱ", "Ⅲ", "Ⅳ", "Ⅴ", "劣Ⅴ"];

/// Complaints per batch: one per five CSV rows, at least one.
pub(crate) fn complaints_per_batch(rows_per_file: usize) -> usize {
    (rows_per_file / 5).max(1)
}

fn batch_date(batch: usize) -> NaiveDate {
    let base = NaiveDate::from_ymd_opt(2025, 3, 15).unwrap_or_default();
    base + Duration::days(i64::try_from(batch).unwrap_or(0))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

fn gbk(text: &str) -> Result<Vec<u8>, SimError> {
    let (bytes, _, had_errors) = encoding_rs::GBK.encode(text);
    if had_errors {
        return Err(SimError::Encoding(text.to_string()));
    }
    Ok(bytes.into_owned())
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, SimError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    std::fs::write(&tmp, bytes).map_err(|source| SimError::Io { path: tmp.clone(), source })?;
    std::fs::rename(&tmp, &path).map_err(|source| SimError::Io { path: path.clone(), source })?;
    Ok(path)
}

/// A value uniformly inside the GB 3838 band of `class` (2..=5) for one parameter.
fn sample(rng: &mut StdRng, param: usize, class: u8, lake: bool) -> String {
    let c = usize::from(class.clamp(2, 5)) - 2;
    match param {
        // 溶解氧 ≥ (higher is better)
        0 => {
            let bands = [(6.0, 8.8), (5.0, 6.0), (3.0, 5.0), (2.0, 3.0)];
            format!("{:.2}", rng.random_range(bands[c].0..bands[c].1))
        }
        // 高锰酸盐指数 ≤
        1 => {
            let bands = [(2.0, 4.0), (4.0, 6.0), (6.0, 10.0), (10.0, 15.0)];
            format!("{:.1}", rng.random_range(bands[c].0..bands[c].1))
        }
        // 氨氮 ≤
        2 => {
            let bands = [(0.15, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.0)];
            format!("{:.3}", rng.random_range(bands[c].0..bands[c].1))
        }
        // 总磷 ≤ (lakes and reservoirs are stricter)
        _ => {
            let bands = if lake {
                [(0.01, 0.025), (0.025, 0.05), (0.05, 0.1), (0.1, 0.2)]
            } else {
                [(0.02, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4)]
            };
            format!("{:.3}", rng.random_range(bands[c].0..bands[c].1))
        }
    }
}

struct CsvOut {
    bytes: Vec<u8>,
    rows: Vec<EnvRow>,
    broken: Option<BrokenRecord>,
}

fn build_csv(
    rng: &mut StdRng,
    name: &str,
    date: NaiveDate,
    first_global_row: usize,
    rows: usize,
    faulty: bool,
) -> Result<CsvOut, SimError> {
    let mut bytes = gbk(&CSV_HEADER.join(","))?;
    bytes.extend_from_slice(b"\r\n");
    let mut line = 1;
    let mut out_rows = Vec::with_capacity(rows);
    let mut broken = None;
    let day_start = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    let flagged_at = rows.saturating_sub(1).min(3);
    let broken_before = rows.min(5);
    for r in 0..=rows {
        if faulty && r == broken_before {
            // A line with bytes that are not GBK: valid GBK text around 0xFF 0xFE.
            let p = POINTS[0];
            let (pcode, pname, pwater, plng, plat) = (p.code, p.name, p.water, p.lng, p.lat);
            let t = fmt_local(day_start + Duration::minutes(23 * 60 + 59));
            let head: String = pname.chars().take(1).collect();
            let tail: String = pname.chars().skip(1).collect();
            let mut raw = gbk(&format!("{pcode},{head}"))?;
            raw.extend_from_slice(&INVALID_GBK);
            raw.extend_from_slice(&gbk(&format!("{tail},{pwater},{t},6.52,3.4,0.412,0.061,{plng},{plat},Ⅲ类,吴兴区"))?);
            bytes.extend_from_slice(&raw);
            bytes.extend_from_slice(b"\r\n");
            line += 1;
            broken = Some(BrokenRecord {
                source: "env_csv",
                key: Some(format!("{name}:{line}")),
                why: "line contains bytes that are not valid GBK (0xFF 0xFE)",
                file: Some(name.to_string()),
                line: Some(line),
                raw: Some(raw),
            });
        }
        if r == rows {
            break;
        }
        let g = first_global_row + r;
        let p = POINTS[g % POINTS.len()];
        let crate::data::Point { code, name: pname, water, division: div, lng, lat, target, lake } = p;
        let t = day_start + Duration::hours(i64::try_from(g / POINTS.len()).unwrap_or(0));
        let actual: u8 = if target == 2 {
            weighted(rng, &[(2u8, 70), (3, 22), (4, 6), (5, 2)], 2)
        } else {
            weighted(rng, &[(2u8, 15), (3, 60), (4, 20), (5, 5)], 3)
        };
        let mut vals: Vec<String> = (0..4)
            .map(|param| {
                let c = if rng.random_bool(0.5) { actual } else { rng.random_range(2..=actual) };
                sample(rng, param, c, lake)
            })
            .collect();
        let mut flag = None;
        if faulty && r == flagged_at {
            vals[0] = "未检出".to_string();
            flag = Some("溶解氧 is 未检出 (not detected), not a number");
        }
        let county = DIVISIONS[div % DIVISIONS.len()].name;
        let fields = [
            code.to_string(),
            pname.to_string(),
            water.to_string(),
            fmt_local(t),
            vals[0].clone(),
            vals[1].clone(),
            vals[2].clone(),
            vals[3].clone(),
            lng.to_string(),
            lat.to_string(),
            format!("{}类", ROMAN[usize::from(target)]),
            county.to_string(),
        ];
        let text: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        bytes.extend_from_slice(&gbk(&text.join(","))?);
        bytes.extend_from_slice(b"\r\n");
        line += 1;
        let [
            point_code,
            point_name,
            water_body,
            sample_time,
            dissolved_oxygen,
            codmn,
            ammonia_n,
            total_p,
            lng,
            lat,
            target_class,
            county,
        ] = fields;
        out_rows.push(EnvRow {
            file: name.to_string(),
            line,
            point_code,
            point_name,
            water_body,
            sample_time,
            dissolved_oxygen,
            codmn,
            ammonia_n,
            total_p,
            lng,
            lat,
            target_class,
            county,
            flag,
        });
    }
    Ok(CsvOut { bytes, rows: out_rows, broken })
}

fn complaint_text(sub: &str) -> &'static str {
    match sub {
        "恶臭异味" => "散发刺鼻异味，晚上尤其严重，周边居民无法开窗",
        "烟粉尘" => "露天堆放物料，扬尘很大",
        "工业废气" => "烟囱冒黑烟，疑似废气未经处理直接排放",
        "建筑施工噪声" => "夜间施工噪声扰民",
        "工业噪声" => "机器噪声昼夜不停",
        "社会生活噪声" => "经营场所音响声音过大",
        "工业废水" => "向河道排放有颜色的废水",
        "生活污水" => "生活污水直排入河",
        "养殖废水" => "养殖废水直排，河水发臭",
        "建筑垃圾" => "在空地上倾倒建筑垃圾",
        "工业固废" => "工业边角料随意堆放焚烧",
        "危险废物" => "废机油、废电瓶随意堆放",
        "非法采砂" => "在河道内非法采砂",
        "毁林" => "毁林开垦种植",
        _ => "填埋湿地建设鱼塘",
    }
}

/// (name, uscc, division, lng, lat) of enterprises complaints may point at.
type Target = (String, String, String, f64, f64);

/// The name people use for a registered company (`湖州吴兴鑫达化工有限公司`
/// → `鑫达化工`): no administrative prefix, no legal form. `None` for other
/// registrations (an individual business's name carries its owner's name).
fn common_name(t: &Target) -> Option<String> {
    let core = t.0.strip_suffix("有限公司")?;
    let d = DIVISIONS.iter().find(|d| d.code == t.2)?;
    let long = format!("湖州{}", d.short);
    let core = [long.as_str(), d.name, "湖州", "浙江"].iter().find_map(|p| core.strip_prefix(p)).unwrap_or(core);
    Some(core.to_string())
}

/// Targets a complainant can name without a USCC: companies whose common
/// name no other company of their district shares.
fn nameable(targets: &[Target]) -> Vec<usize> {
    let key = |t: &Target| common_name(t).map(|c| (t.2.clone(), c));
    let mut count: HashMap<(String, String), usize> = HashMap::new();
    for k in targets.iter().filter_map(key) {
        *count.entry(k).or_default() += 1;
    }
    (0..targets.len()).filter(|&i| key(&targets[i]).is_some_and(|k| count[&k] == 1)).collect()
}

/// A complaint; with the USCC of the company it names by name only (the
/// truth for enterprise resolution), if it does.
fn complaint(
    rng: &mut StdRng,
    seq: usize,
    date: NaiveDate,
    targets: &[Target],
    nameable: &[usize],
) -> (Value, Option<String>) {
    let primary = rng.random_range(0..POLLUTION_TYPES.len());
    let weights: Vec<(usize, u32)> = POLLUTION_TYPES.iter().enumerate().map(|(i, p)| (i, p.2)).collect();
    let primary = weighted(rng, &weights, primary);
    let (ptype, subs, _) = POLLUTION_TYPES[primary];
    let sub = pick(rng, subs);
    let mut types = vec![ptype];
    if rng.random_bool(0.2) {
        let other = POLLUTION_TYPES[rng.random_range(0..POLLUTION_TYPES.len())].0;
        if other != ptype {
            types.push(other);
        }
    }
    let report = date.and_hms_opt(7, 0, 0).unwrap_or_default() + Duration::minutes(rng.random_range(0..14 * 60));
    let updated: NaiveDateTime = report + Duration::minutes(rng.random_range(5..240));
    let linked = !targets.is_empty() && rng.random_bool(0.6);
    let mut named = None;
    let (target_name, target_uscc, div_code, lng, lat) = if linked {
        let t = &targets[rng.random_range(0..targets.len())];
        (
            Some(t.0.clone()),
            Some(t.1.clone()),
            t.2.clone(),
            t.3 + rng.random_range(-0.003..0.003),
            t.4 + rng.random_range(-0.003..0.003),
        )
    } else if !nameable.is_empty() && rng.random_bool(0.5) {
        // A company named the way people name it, without a USCC.
        let t = &targets[nameable[rng.random_range(0..nameable.len())]];
        let common = common_name(t).unwrap_or_default();
        let common = if rng.random_bool(0.3) { format!("{common}厂") } else { common };
        named = Some(t.1.clone());
        (Some(common), None, t.2.clone(), t.3 + rng.random_range(-0.003..0.003), t.4 + rng.random_range(-0.003..0.003))
    } else {
        let d = &DIVISIONS[rng.random_range(0..DIVISIONS.len())];
        let (lng, lat) = data::point_in(rng, d);
        (None, None, d.code.to_string(), lng, lat)
    };
    let d = DIVISIONS.iter().find(|d| d.code == div_code).unwrap_or(&DIVISIONS[0]);
    let town = pick(rng, d.towns);
    let place = format!("湖州市{}{}{}", d.name, town, pick(rng, d.roads));
    let who = target_name.clone().unwrap_or_else(|| "一家工厂".to_string());
    let accepted = !rng.random_bool(0.2);
    let v = json!({
        "complaint_no": format!("HZ12369{}{:04}", date.format("%Y%m%d"), seq),
        "report_time": fmt_iso(report),
        "channel": weighted(rng, &[("电话", 44), ("微信", 45), ("网络", 10), ("其他", 1)], "电话"),
        "pollution_types": types,
        "sub_type": sub,
        "industry": weighted(rng, &[("建筑业", 40), ("制造业", 30), ("住宿餐饮娱乐", 18), ("其他", 12)], "其他"),
        "content": format!("{place}附近{who}{}。", complaint_text(sub)),
        "address": place,
        "division": d.code,
        "target_name": target_name,
        "target_uscc": target_uscc,
        "lng": crate::geo::round6(lng),
        "lat": crate::geo::round6(lat),
        "coord": "WGS-84",
        "accepted": accepted,
        "reject_reason": if accepted { Value::Null } else { json!(pick(rng, &["线索不详", "不属于受理范围"])) },
        "updated_at": fmt_iso(updated),
    });
    (v, named)
}

/// Write one batch: `n_files` GBK CSV files and one complaints JSON-lines file.
pub(crate) fn write_batch(sh: &Shared, dir: &Path, n_files: usize) -> Result<Vec<PathBuf>, SimError> {
    let cfg = &sh.cfg;
    let n_complaints = complaints_per_batch(cfg.env_rows_per_file);
    let (batch, first_file, first_complaint, targets) = {
        let mut w = sh.world_mut();
        let b = w.batches;
        w.batches += 1;
        let f = w.csv_files;
        w.csv_files += n_files;
        let c = w.complaint_seq;
        w.complaint_seq += n_complaints + 1;
        let targets: Vec<Target> = w
            .enterprises
            .iter()
            .map(|r| {
                let v = &r.value;
                let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                (
                    s("name"),
                    s("uscc"),
                    s("division"),
                    v["lng"].as_f64().unwrap_or(120.1),
                    v["lat"].as_f64().unwrap_or(30.9),
                )
            })
            .collect();
        (b, f, c, targets)
    };
    let nameable = nameable(&targets);
    let mut rng = sub_rng(cfg.seed, 12369 + batch as u64);
    let date = batch_date(batch);
    let ymd = date.format("%Y%m%d").to_string();
    let mut paths = Vec::with_capacity(n_files + 1);
    for i in 0..n_files {
        let name = format!("水质监测_{ymd}_{:02}.csv", first_file + i + 1);
        let out = build_csv(&mut rng, &name, date, i * cfg.env_rows_per_file, cfg.env_rows_per_file, i == 0)?;
        paths.push(write_atomically(dir, &name, &out.bytes)?);
        let mut w = sh.world_mut();
        w.env_rows.extend(out.rows);
        w.file_broken.extend(out.broken);
    }

    // Complaints: n valid lines with one truncated (invalid JSON) line at line min(3, n + 1).
    let name = format!("complaints_{ymd}_{:02}.jsonl", batch + 1);
    let bad_line = 3.min(n_complaints + 1);
    let mut text = String::new();
    let mut rows = Vec::with_capacity(n_complaints);
    let mut broken = None;
    let mut seq = first_complaint;
    for line in 1..=n_complaints + 1 {
        seq += 1;
        let (v, named_uscc) = complaint(&mut rng, seq, date, &targets, &nameable);
        if line == bad_line {
            let full = v.to_string();
            let mut cut = full.len() / 2;
            while !full.is_char_boundary(cut) {
                cut -= 1;
            }
            let raw = full[..cut].to_string();
            text.push_str(&raw);
            broken = Some(BrokenRecord {
                source: "env_complaints",
                key: Some(format!("{name}:{line}")),
                why: "line is not valid JSON (truncated object)",
                file: Some(name.clone()),
                line: Some(line),
                raw: Some(raw.into_bytes()),
            });
        } else {
            text.push_str(&v.to_string());
            rows.push(ComplaintRow { file: name.clone(), line, value: v, named_uscc });
        }
        text.push('\n');
    }
    paths.push(write_atomically(dir, &name, text.as_bytes())?);
    let mut w = sh.world_mut();
    w.complaints.extend(rows);
    w.file_broken.extend(broken);
    Ok(paths)
}
