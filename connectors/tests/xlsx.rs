//! XLSX drops in the `file` connector: a workbook generated here (Chinese
//! headers under a title row, dates, date-times, numbers), once per content
//! hash, broken workbooks to `failed/` with the reason.

use std::sync::Arc;
use std::time::Duration;

use lianqin_bus::{Bus, EmbeddedBus, Envelope, OffsetLookup};
use lianqin_connectors::file::FileSource;
use lianqin_connectors::{ConnectorConfig, PollingSource, SourceContext};
use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
use serde_json::{Value, json};

async fn bus_ctx(dir: &std::path::Path, topic: &str) -> (Arc<EmbeddedBus>, SourceContext) {
    let bus = Arc::new(EmbeddedBus::open(dir).unwrap());
    bus.ensure_topic(topic, 2).await.unwrap();
    let ctx = SourceContext { bus: Arc::clone(&bus) as Arc<dyn Bus>, topic: topic.to_string() };
    (bus, ctx)
}

async fn read_all(bus: &EmbeddedBus, topic: &str) -> Vec<Envelope> {
    let lookup: OffsetLookup = Arc::new(|_, _| None);
    let group = format!("g{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    let mut c = bus.consumer(&group, &[topic.to_string()], lookup).await.unwrap();
    let mut out = Vec::new();
    loop {
        let b = c.poll(10_000, Duration::from_millis(200)).await.unwrap();
        if b.is_empty() {
            break;
        }
        out.extend(b.into_iter().map(|r| r.envelope));
    }
    out
}

/// 农业农村局 耕地台账: a title row, then the header in row 2.
fn farmland_workbook(rows: u32) -> Vec<u8> {
    let mut wb = Workbook::new();
    let date = Format::new().set_num_format("yyyy-mm-dd");
    let datetime = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
    let ws = wb.add_worksheet();
    ws.set_name("说明").unwrap();
    ws.write_string(0, 0, "本表由农业农村局导出").unwrap();
    let ws = wb.add_worksheet();
    ws.set_name("耕地台账").unwrap();
    ws.write_string(0, 0, "安吉县永久基本农田地块台账（2025年）").unwrap();
    for (c, h) in
        ["地块编码", "村名", "面积（亩）", "地类", "承包人", "登记日期", "巡查时间", "是否非粮化"].iter().enumerate()
    {
        ws.write_string(1, c as u16, *h).unwrap();
    }
    for i in 0..rows {
        let r = 2 + i;
        ws.write_string(r, 0, format!("330523{:06}", 100 + i)).unwrap();
        ws.write_string(r, 1, ["递铺", "孝丰", "天子湖"][i as usize % 3]).unwrap();
        ws.write_number(r, 2, 1.5 + f64::from(i)).unwrap();
        ws.write_string(r, 3, if i % 2 == 0 { "0101 水田" } else { "0103 旱地" }).unwrap();
        ws.write_string(r, 4, format!("农户{i}")).unwrap();
        ws.write_datetime_with_format(r, 5, ExcelDateTime::from_ymd(2025, 3, 1 + (i % 28) as u8).unwrap(), &date)
            .unwrap();
        ws.write_datetime_with_format(
            r,
            6,
            ExcelDateTime::from_ymd(2025, 10, 8).unwrap().and_hms(9, 30 + (i % 30) as u8, 15).unwrap(),
            &datetime,
        )
        .unwrap();
        ws.write_boolean(r, 7, i % 5 == 0).unwrap();
    }
    // An empty row in the middle is skipped; a row without a key stays (the pipeline quarantines it).
    ws.write_string(2 + rows + 1, 1, "无编码地块").unwrap();
    wb.save_to_buffer().unwrap()
}

fn source(dir: &std::path::Path, sheet: Option<&str>) -> FileSource {
    let mut v = json!({
        "type": "file",
        "dir": dir,
        "format": "xlsx",
        "header_row": 2,
        "key_columns": ["地块编码"],
        "chunk_rows": 4,
    });
    if let Some(s) = sheet {
        v["sheet"] = json!(s);
    }
    let ConnectorConfig::File(cfg) = serde_json::from_value::<ConnectorConfig>(v).unwrap() else { unreachable!() };
    cfg.validate("agri_farmland").unwrap();
    FileSource::new("agri_farmland", "agriculture", cfg)
}

#[tokio::test]
async fn xlsx_rows_with_chinese_headers_and_dates_once_per_content() {
    let drop = tempfile::tempdir().unwrap();
    let busdir = tempfile::tempdir().unwrap();
    let (bus, ctx) = bus_ctx(busdir.path(), "raw.agri").await;
    let book = farmland_workbook(10);
    std::fs::write(drop.path().join("耕地台账-2025.xlsx"), &book).unwrap();
    let mut src = source(drop.path(), Some("耕地台账"));
    let stats = src.sync_once(&ctx).await.unwrap();
    assert_eq!(stats.records, 11, "10 keyed rows + 1 row without a key");
    assert_eq!(stats.units, 1);
    let recs = read_all(&bus, "raw.agri").await;
    assert_eq!(recs.len(), 11);
    let r = recs.iter().find(|e| e.key == "330523000103").expect("row 4");
    assert_eq!(r.payload()["村名"], "递铺");
    assert_eq!(r.payload()["面积（亩）"], json!(4.5));
    assert_eq!(r.payload()["地类"], "0103 旱地");
    assert_eq!(r.payload()["登记日期"], "2025-03-04");
    assert_eq!(r.payload()["巡查时间"], "2025-10-08 09:33:15");
    assert_eq!(r.payload()["是否非粮化"], json!(false));
    assert_eq!(r.locator.as_deref(), Some("耕地台账-2025.xlsx!耕地台账:6"));
    let keyless = recs.iter().find(|e| e.key.is_empty()).expect("keyless row kept");
    assert_eq!(keyless.payload()["村名"], "无编码地块");
    assert_eq!(keyless.payload()["地块编码"], Value::Null);
    assert!(drop.path().join("processed").join("耕地台账-2025.xlsx").exists());

    // The same content dropped again under another name is not ingested twice.
    std::fs::write(drop.path().join("耕地台账-副本.xlsx"), &book).unwrap();
    let again = src.sync_once(&ctx).await.unwrap();
    assert_eq!(again.records, 0);
    assert!(drop.path().join("processed").join("耕地台账-副本.xlsx").exists());
    assert_eq!(read_all(&bus, "raw.agri").await.len(), 11);

    // A changed workbook is new content.
    std::fs::write(drop.path().join("耕地台账-2025-12.xlsx"), farmland_workbook(12)).unwrap();
    assert_eq!(src.sync_once(&ctx).await.unwrap().records, 13);
}

#[tokio::test]
async fn broken_workbooks_go_to_failed_with_the_reason() {
    let drop = tempfile::tempdir().unwrap();
    let busdir = tempfile::tempdir().unwrap();
    let (bus, ctx) = bus_ctx(busdir.path(), "raw.agri").await;
    // Not a zip at all, a truncated workbook, and a good workbook without the sheet.
    std::fs::write(drop.path().join("坏文件.xlsx"), b"this is not an excel file").unwrap();
    let book = farmland_workbook(3);
    std::fs::write(drop.path().join("truncated.xlsx"), &book[..book.len() / 2]).unwrap();
    let mut src = source(drop.path(), Some("耕地台账"));
    let stats = src.sync_once(&ctx).await.unwrap();
    assert_eq!(stats.records, 0);
    let failed = drop.path().join("failed");
    for f in ["坏文件.xlsx", "truncated.xlsx"] {
        assert!(failed.join(f).exists(), "{f} moved to failed/");
        let reason = std::fs::read_to_string(failed.join(format!("{f}.reason.txt"))).unwrap();
        assert!(reason.contains(f) && reason.contains("not a readable XLSX workbook"), "{reason}");
    }

    std::fs::write(drop.path().join("good.xlsx"), &book).unwrap();
    let mut wrong_sheet = source(drop.path(), Some("林地台账"));
    wrong_sheet.sync_once(&ctx).await.unwrap();
    let reason = std::fs::read_to_string(failed.join("good.xlsx.reason.txt")).unwrap();
    assert!(reason.contains("no sheet `林地台账`") && reason.contains("耕地台账"), "{reason}");
    assert!(read_all(&bus, "raw.agri").await.is_empty());
}
