//! Surface-water quality class per GB 3838-2002 《地表水环境质量标准》,
//! Table 1 (地表水环境质量标准基本项目标准限值), from monitoring readings keyed
//! by their HJ 212 factor codes (domain.md §1.10, §2).
//!
//! * Single-factor evaluation: each item gets the best class whose limit it
//!   meets; the water's class is the **worst** item's class (GB 3838-2002
//!   §5.2, 单因子评价).
//! * Limits are inclusive (`≤` for pollutants, `≥` for dissolved oxygen, where
//!   higher is better). When two classes share a limit (e.g. COD 15 for I and
//!   II) the better class is given.
//! * pH has one range (6–9) for all classes: inside it pH does not limit the
//!   class, outside it the water is 劣V.
//! * Total nitrogen is a lake/reservoir item (湖、库); for rivers it is
//!   ignored. Total phosphorus has separate lake/reservoir limits.
//! * Water temperature has no class limits and is not evaluated.
//!
//! Units: [`Reading::value`] is in the GB 3838 unit (mg/L; 个/L for faecal
//! coliforms; dimensionless pH). HJ 212 reports Hg, Cd, Cr(VI), As, Pb and
//! Se in µg/L (HJ 212-2017 code table); [`Reading::from_hj212`] converts.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::error::IdError;

/// GB 3838-2002 water-quality class, ordered best (I) to worst (劣V).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum WaterClass {
    /// Ⅰ类: source water, national nature reserves.
    I,
    /// Ⅱ类: first-grade drinking-water source protection areas, …
    II,
    /// Ⅲ类: second-grade drinking-water source protection areas, fisheries, swimming.
    III,
    /// Ⅳ类: general industrial water, non-contact recreation.
    IV,
    /// Ⅴ类: agricultural water, general landscape.
    V,
    /// 劣Ⅴ类: worse than class V.
    WorseThanV,
}

impl WaterClass {
    const ALL: [WaterClass; 5] = [WaterClass::I, WaterClass::II, WaterClass::III, WaterClass::IV, WaterClass::V];

    /// ASCII label: `I`, `II`, `III`, `IV`, `V`, `劣V`.
    pub fn as_str(self) -> &'static str {
        match self {
            WaterClass::I => "I",
            WaterClass::II => "II",
            WaterClass::III => "III",
            WaterClass::IV => "IV",
            WaterClass::V => "V",
            WaterClass::WorseThanV => "劣V",
        }
    }

    /// Label as printed in Chinese bulletins: `Ⅰ类` … `Ⅴ类`, `劣Ⅴ类`.
    pub fn label_cn(self) -> &'static str {
        match self {
            WaterClass::I => "Ⅰ类",
            WaterClass::II => "Ⅱ类",
            WaterClass::III => "Ⅲ类",
            WaterClass::IV => "Ⅳ类",
            WaterClass::V => "Ⅴ类",
            WaterClass::WorseThanV => "劣Ⅴ类",
        }
    }
}

impl fmt::Display for WaterClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WaterClass {
    type Err = IdError;

    /// Parses `I`…`V`, `1`…`5`, `Ⅰ`…`Ⅴ` (NFKC folds the Roman-numeral
    /// characters), with optional `类` suffix, and `劣V` / `劣Ⅴ类` / `6`.
    /// Rule `water.class` otherwise.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = crate::text::normalize_code(s);
        let t = t.strip_suffix('类').unwrap_or(&t);
        Ok(match t {
            "I" | "1" => WaterClass::I,
            "II" | "2" => WaterClass::II,
            "III" | "3" => WaterClass::III,
            "IV" | "4" => WaterClass::IV,
            "V" | "5" => WaterClass::V,
            "劣V" | "劣5" | "6" | ">V" => WaterClass::WorseThanV,
            _ => {
                return Err(IdError::new("water.class", format!("{s:?} is not a GB 3838 water class")));
            }
        })
    }
}

/// Water body type; selects the lake/reservoir (湖、库) limits for TP and TN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
pub enum WaterBody {
    /// Rivers, canals, channels.
    #[default]
    River,
    /// Lakes and reservoirs (湖、库).
    LakeReservoir,
}

/// A GB 3838-2002 Table 1 basic item, with its HJ 212 factor code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Factor {
    /// pH, `w01001`.
    Ph,
    /// Dissolved oxygen 溶解氧, `w01009` (higher is better).
    DissolvedOxygen,
    /// Permanganate index 高锰酸盐指数 (CODMn), `w01019`.
    CodMn,
    /// Chemical oxygen demand 化学需氧量 (COD), `w01018`.
    Cod,
    /// Five-day biochemical oxygen demand (BOD5), `w01017`.
    Bod5,
    /// Ammonia nitrogen 氨氮 (NH3-N), `w21003`.
    AmmoniaN,
    /// Total phosphorus 总磷 (TP), `w21011`.
    TotalP,
    /// Total nitrogen 总氮 (TN), `w21001` — lakes/reservoirs only.
    TotalN,
    /// Copper 铜, `w20122`.
    Copper,
    /// Zinc 锌, `w20123`.
    Zinc,
    /// Fluoride 氟化物, `w21017`.
    Fluoride,
    /// Selenium 硒, `w20128` (HJ 212 unit µg/L).
    Selenium,
    /// Arsenic 砷, `w20119` (HJ 212 unit µg/L).
    Arsenic,
    /// Mercury 汞, `w20111` (HJ 212 unit µg/L).
    Mercury,
    /// Cadmium 镉, `w20115` (HJ 212 unit µg/L).
    Cadmium,
    /// Hexavalent chromium 铬(六价), `w20117` (HJ 212 unit µg/L).
    Chromium6,
    /// Lead 铅, `w20120` (HJ 212 unit µg/L).
    Lead,
    /// Cyanide 氰化物, `w21016`.
    Cyanide,
    /// Volatile phenol 挥发酚, `w23002`.
    VolatilePhenol,
    /// Petroleum 石油类, `w22001`.
    Petroleum,
    /// Anionic surfactant 阴离子表面活性剂 (LAS), `w19002`.
    AnionicSurfactant,
    /// Sulfide 硫化物, `w21019`.
    Sulfide,
    /// Faecal coliforms 粪大肠菌群 (个/L), `w02003`.
    FecalColiform,
}

/// (factor, HJ 212 code, name, HJ 212 unit → mg/L factor)
const FACTORS: &[(Factor, &str, &str, f64)] = &[
    (Factor::Ph, "w01001", "pH", 1.0),
    (Factor::DissolvedOxygen, "w01009", "溶解氧", 1.0),
    (Factor::CodMn, "w01019", "高锰酸盐指数", 1.0),
    (Factor::Cod, "w01018", "化学需氧量", 1.0),
    (Factor::Bod5, "w01017", "五日生化需氧量", 1.0),
    (Factor::AmmoniaN, "w21003", "氨氮", 1.0),
    (Factor::TotalP, "w21011", "总磷", 1.0),
    (Factor::TotalN, "w21001", "总氮", 1.0),
    (Factor::Copper, "w20122", "铜", 1.0),
    (Factor::Zinc, "w20123", "锌", 1.0),
    (Factor::Fluoride, "w21017", "氟化物", 1.0),
    (Factor::Selenium, "w20128", "硒", 0.001),
    (Factor::Arsenic, "w20119", "砷", 0.001),
    (Factor::Mercury, "w20111", "汞", 0.001),
    (Factor::Cadmium, "w20115", "镉", 0.001),
    (Factor::Chromium6, "w20117", "铬(六价)", 0.001),
    (Factor::Lead, "w20120", "铅", 0.001),
    (Factor::Cyanide, "w21016", "氰化物", 1.0),
    (Factor::VolatilePhenol, "w23002", "挥发酚", 1.0),
    (Factor::Petroleum, "w22001", "石油类", 1.0),
    (Factor::AnionicSurfactant, "w19002", "阴离子表面活性剂", 1.0),
    (Factor::Sulfide, "w21019", "硫化物", 1.0),
    (Factor::FecalColiform, "w02003", "粪大肠菌群", 1.0),
];

impl Factor {
    fn row(self) -> &'static (Factor, &'static str, &'static str, f64) {
        // FACTORS lists every variant; the fallback is never taken.
        FACTORS.iter().find(|r| r.0 == self).unwrap_or(&FACTORS[0])
    }

    /// HJ 212-2017 factor code, e.g. `w01009`.
    pub fn hj212_code(self) -> &'static str {
        self.row().1
    }

    /// Chinese item name as in GB 3838-2002 Table 1.
    pub fn name_cn(self) -> &'static str {
        self.row().2
    }

    /// Factor for an HJ 212 code (case-insensitive), e.g. `w21003` → NH3-N.
    /// The 2005 codes are not accepted here; map them first.
    pub fn from_hj212_code(code: &str) -> Option<Factor> {
        let c = code.trim().to_ascii_lowercase();
        FACTORS.iter().find(|r| r.1 == c).map(|r| r.0)
    }

    /// `true` for dissolved oxygen, the only item where higher is better.
    pub fn higher_is_better(self) -> bool {
        self == Factor::DissolvedOxygen
    }

    /// GB 3838-2002 Table 1 limits for classes I–V, in mg/L (个/L for
    /// faecal coliforms). `None` for pH (range, not classes) and for total
    /// nitrogen in rivers (a lake/reservoir item).
    pub fn limits(self, body: WaterBody) -> Option<[f64; 5]> {
        use Factor::*;
        let lake = body == WaterBody::LakeReservoir;
        Some(match self {
            Ph => return None,
            DissolvedOxygen => [7.5, 6.0, 5.0, 3.0, 2.0],
            CodMn => [2.0, 4.0, 6.0, 10.0, 15.0],
            Cod => [15.0, 15.0, 20.0, 30.0, 40.0],
            Bod5 => [3.0, 3.0, 4.0, 6.0, 10.0],
            AmmoniaN => [0.15, 0.5, 1.0, 1.5, 2.0],
            TotalP if lake => [0.01, 0.025, 0.05, 0.1, 0.2],
            TotalP => [0.02, 0.1, 0.2, 0.3, 0.4],
            TotalN if lake => [0.2, 0.5, 1.0, 1.5, 2.0],
            TotalN => return None,
            Copper => [0.01, 1.0, 1.0, 1.0, 1.0],
            Zinc => [0.05, 1.0, 1.0, 2.0, 2.0],
            Fluoride => [1.0, 1.0, 1.0, 1.5, 1.5],
            Selenium => [0.01, 0.01, 0.01, 0.02, 0.02],
            Arsenic => [0.05, 0.05, 0.05, 0.1, 0.1],
            Mercury => [0.00005, 0.00005, 0.0001, 0.001, 0.001],
            Cadmium => [0.001, 0.005, 0.005, 0.005, 0.01],
            Chromium6 => [0.01, 0.05, 0.05, 0.05, 0.1],
            Lead => [0.01, 0.01, 0.05, 0.05, 0.1],
            Cyanide => [0.005, 0.05, 0.2, 0.2, 0.2],
            VolatilePhenol => [0.002, 0.002, 0.005, 0.01, 0.1],
            Petroleum => [0.05, 0.05, 0.05, 0.5, 1.0],
            AnionicSurfactant => [0.2, 0.2, 0.2, 0.3, 0.3],
            Sulfide => [0.05, 0.1, 0.2, 0.5, 1.0],
            FecalColiform => [200.0, 2000.0, 10000.0, 20000.0, 40000.0],
        })
    }

    /// Class of a single reading of this item; `None` if the value is not
    /// finite or negative (instrument error), or the item does not apply to
    /// this water body.
    pub fn class_of(self, value: f64, body: WaterBody) -> Option<WaterClass> {
        if !value.is_finite() || value < 0.0 {
            return None;
        }
        if self == Factor::Ph {
            return Some(if (6.0..=9.0).contains(&value) { WaterClass::I } else { WaterClass::WorseThanV });
        }
        let lim = self.limits(body)?;
        let meets = |l: f64| {
            if self.higher_is_better() { value >= l } else { value <= l }
        };
        Some(
            WaterClass::ALL.iter().zip(lim).find(|(_, l)| meets(*l)).map(|(c, _)| *c).unwrap_or(WaterClass::WorseThanV),
        )
    }
}

/// One reading in GB 3838 units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Reading {
    /// The item measured.
    pub factor: Factor,
    /// Value in mg/L (个/L for faecal coliforms, dimensionless for pH).
    pub value: f64,
}

impl Reading {
    /// Builds a reading from an HJ 212 factor code and the value as sent,
    /// converting µg/L to mg/L for Se, As, Hg, Cd, Cr(VI) and Pb. `None` for
    /// codes that are not GB 3838 Table 1 items.
    pub fn from_hj212(code: &str, value: f64) -> Option<Reading> {
        let factor = Factor::from_hj212_code(code)?;
        Some(Reading { factor, value: value * factor.row().3 })
    }
}

/// Per-item result of [`classify_detailed`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    /// Overall class (worst item), `None` if no reading could be classified.
    pub class: Option<WaterClass>,
    /// Class of each classified reading, in input order.
    pub items: Vec<(Factor, WaterClass)>,
    /// Items that decided the overall class (all items at the worst class).
    pub determining: Vec<Factor>,
    /// Readings ignored: non-finite/negative values or items not applicable
    /// to the water body (TN in rivers).
    pub ignored: Vec<Factor>,
}

/// Full single-factor evaluation for `body`.
pub fn classify_detailed(body: WaterBody, readings: &[Reading]) -> Classification {
    let mut items = Vec::new();
    let mut ignored = Vec::new();
    for r in readings {
        match r.factor.class_of(r.value, body) {
            Some(c) => items.push((r.factor, c)),
            None => ignored.push(r.factor),
        }
    }
    let class = items.iter().map(|(_, c)| *c).max();
    let determining = items.iter().filter(|(_, c)| Some(*c) == class).map(|(f, _)| *f).collect();
    Classification { class, items, determining, ignored }
}

/// Water class of a river reach (the worst item decides). `None` when no
/// reading could be classified — an empty or all-invalid set must not read
/// as class I.
pub fn classify(readings: &[Reading]) -> Option<WaterClass> {
    classify_detailed(WaterBody::River, readings).class
}

/// [`classify`] for a given water body (lake/reservoir limits for TP, TN).
pub fn classify_for(body: WaterBody, readings: &[Reading]) -> Option<WaterClass> {
    classify_detailed(body, readings).class
}

/// `true` if `class` is worse than the target (功能区目标) class, i.e. the
/// water fails its target and should raise an early warning.
pub fn worse_than_target(class: WaterClass, target: WaterClass) -> bool {
    class > target
}

/// 超标倍数 (multiple by which the target-class limit is exceeded):
/// `(value − limit) / limit`, `None` if within the limit, not applicable,
/// for dissolved oxygen and pH (no multiple is defined for them), or for a
/// target of 劣V.
pub fn exceedance_multiple(factor: Factor, value: f64, target: WaterClass, body: WaterBody) -> Option<f64> {
    if factor.higher_is_better() || !value.is_finite() {
        return None;
    }
    let idx = WaterClass::ALL.iter().position(|c| *c == target)?;
    let limit = factor.limits(body)?[idx];
    (value > limit).then(|| (value - limit) / limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(code: &str, v: f64) -> Reading {
        Reading::from_hj212(code, v).unwrap()
    }

    #[test]
    fn single_items_at_boundaries() {
        let b = WaterBody::River;
        // DO ≥: 7.5 6 5 3 2 (domain.md §2)
        assert_eq!(Factor::DissolvedOxygen.class_of(7.5, b), Some(WaterClass::I));
        assert_eq!(Factor::DissolvedOxygen.class_of(7.49, b), Some(WaterClass::II));
        assert_eq!(Factor::DissolvedOxygen.class_of(5.0, b), Some(WaterClass::III));
        assert_eq!(Factor::DissolvedOxygen.class_of(2.0, b), Some(WaterClass::V));
        assert_eq!(Factor::DissolvedOxygen.class_of(1.99, b), Some(WaterClass::WorseThanV));
        // NH3-N ≤: 0.15 0.5 1.0 1.5 2.0
        assert_eq!(Factor::AmmoniaN.class_of(0.15, b), Some(WaterClass::I));
        assert_eq!(Factor::AmmoniaN.class_of(0.5, b), Some(WaterClass::II));
        assert_eq!(Factor::AmmoniaN.class_of(1.01, b), Some(WaterClass::IV));
        assert_eq!(Factor::AmmoniaN.class_of(2.01, b), Some(WaterClass::WorseThanV));
        // COD: I and II share 15 → I.
        assert_eq!(Factor::Cod.class_of(15.0, b), Some(WaterClass::I));
        assert_eq!(Factor::Cod.class_of(21.5, b), Some(WaterClass::IV));
        // TP river vs lake
        assert_eq!(Factor::TotalP.class_of(0.05, b), Some(WaterClass::II));
        assert_eq!(Factor::TotalP.class_of(0.05, WaterBody::LakeReservoir), Some(WaterClass::III));
        // TN only for lakes
        assert_eq!(Factor::TotalN.class_of(1.2, b), None);
        assert_eq!(Factor::TotalN.class_of(1.2, WaterBody::LakeReservoir), Some(WaterClass::IV));
        // pH
        assert_eq!(Factor::Ph.class_of(7.42, b), Some(WaterClass::I));
        assert_eq!(Factor::Ph.class_of(9.2, b), Some(WaterClass::WorseThanV));
        // invalid values
        assert_eq!(Factor::Cod.class_of(f64::NAN, b), None);
        assert_eq!(Factor::Cod.class_of(-1.0, b), None);
    }

    /// The synthetic surface-water frame of domain.md §1.12 (MN …W001):
    /// pH 7.42 (ok), DO 6.81 (II), CODMn 3.2 (II), NH3-N 0.38 (II),
    /// TP 0.112 (III, > 0.1) → class III, decided by TP.
    #[test]
    fn frame_example() {
        let rs = [r("w01001", 7.42), r("w01009", 6.81), r("w01019", 3.2), r("w21003", 0.38), r("w21011", 0.112)];
        let c = classify_detailed(WaterBody::River, &rs);
        assert_eq!(c.class, Some(WaterClass::III));
        assert_eq!(c.determining, vec![Factor::TotalP]);
        assert!(!worse_than_target(WaterClass::III, WaterClass::III));
        assert!(worse_than_target(WaterClass::III, WaterClass::II));
        assert!(worse_than_target(WaterClass::WorseThanV, WaterClass::V));
        assert_eq!(classify(&rs), Some(WaterClass::III));
    }

    #[test]
    fn units_and_codes() {
        // Hg 0.08 µg/L = 0.00008 mg/L → class III (≤ 0.0001).
        let hg = r("w20111", 0.08);
        assert!((hg.value - 0.00008).abs() < 1e-12);
        assert_eq!(classify(&[hg]), Some(WaterClass::III));
        assert_eq!(Factor::from_hj212_code("W21003"), Some(Factor::AmmoniaN));
        assert_eq!(Factor::from_hj212_code("w00000"), None);
        assert_eq!(Factor::AmmoniaN.hj212_code(), "w21003");
        for (f, code, _, _) in FACTORS {
            assert_eq!(Factor::from_hj212_code(code), Some(*f));
        }
        assert_eq!(classify(&[]), None);
        assert_eq!(classify(&[Reading { factor: Factor::Cod, value: f64::NAN }]), None);
    }

    #[test]
    fn class_parse_and_exceedance() {
        assert_eq!("Ⅲ类".parse::<WaterClass>().unwrap(), WaterClass::III);
        assert_eq!("劣Ⅴ类".parse::<WaterClass>().unwrap(), WaterClass::WorseThanV);
        assert_eq!("iv".parse::<WaterClass>().unwrap(), WaterClass::IV);
        assert_eq!("3".parse::<WaterClass>().unwrap(), WaterClass::III);
        assert_eq!("VI".parse::<WaterClass>().unwrap_err().rule, "water.class");
        for c in WaterClass::ALL {
            assert_eq!(c.as_str().parse::<WaterClass>().unwrap(), c);
            assert_eq!(c.label_cn().parse::<WaterClass>().unwrap(), c);
        }
        // NH3-N 1.5 vs III limit 1.0 → 0.5 times over.
        let m = exceedance_multiple(Factor::AmmoniaN, 1.5, WaterClass::III, WaterBody::River);
        assert!((m.unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(exceedance_multiple(Factor::AmmoniaN, 0.9, WaterClass::III, WaterBody::River), None);
        assert_eq!(exceedance_multiple(Factor::DissolvedOxygen, 1.0, WaterClass::III, WaterBody::River), None);
    }
}
