//! Motor-vehicle plate numbers — GA 36-2018 《中华人民共和国机动车号牌》
//! (domain.md §3.3).
//!
//! * Ordinary plates: province abbreviation + authority letter + 5 serial
//!   characters (`浙E12345`, `浙EA123B`, `浙E1234挂`, `浙E1234警`).
//! * New-energy plates (8 characters): province + authority letter + 6
//!   serial characters. Small vehicles put the energy letter first
//!   (`浙ED12345`, `浙EDA1234`); large vehicles put it last (`浙E12345D`).
//!   `D` = battery-electric, `F` = other new energy; since the 2022 number
//!   range extension small vehicles also use `A B C E` (electric) and
//!   `G H J K` (non-electric) in that position \[S\], which is accepted.
//! * The letters `I` and `O` are never used in serials or authority letters.
//!
//! Not covered (rejected as `plate.province`): embassy/consulate (`使`/`领`
//! prefix), armed-police (`WJ`) and military plates.

use serde::Serialize;

use crate::codes;
use crate::error::IdError;

/// Kind of plate recognised by [`validate_plate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PlateKind {
    /// 7-character ordinary plate.
    Ordinary,
    /// 8-character new-energy plate, energy letter right after the authority letter.
    NewEnergySmall,
    /// 8-character new-energy plate, energy letter last.
    NewEnergyLarge,
}

/// A validated plate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plate {
    /// The normalised plate, e.g. `浙E12345`.
    pub number: String,
    /// Province abbreviation, e.g. `浙`.
    pub province: char,
    /// Authority letter (发牌机关代号), e.g. `E` (Huzhou for 浙).
    pub authority: char,
    /// Plate kind.
    pub kind: PlateKind,
}

impl Plate {
    /// `true` for 浙E plates, issued in Huzhou (domain.md §3.3).
    pub fn is_huzhou(&self) -> bool {
        self.province == '浙' && self.authority == 'E'
    }
}

/// Normalises a plate string: NFKC (full-width → half-width), ASCII letters
/// upper-cased, and spaces, dots (`.`, `·`, `•`, `・`, `‧`) and hyphens removed.
/// `浙ｅ·１２３４５` → `浙E12345`.
pub fn normalize_plate(s: &str) -> String {
    crate::text::normalize_code(s).chars().filter(|c| !matches!(c, '.' | '·' | '•' | '・' | '‧' | '-' | '_')).collect()
}

fn serial_ok(c: char) -> bool {
    (c.is_ascii_uppercase() && c != 'I' && c != 'O') || c.is_ascii_digit()
}

/// Validates a plate per GA 36-2018 after [`normalize_plate`].
///
/// Rules:
/// * `plate.length` — not 7 (ordinary) or 8 (new-energy) characters;
/// * `plate.province` — first character is not one of the 31 province abbreviations;
/// * `plate.authority` — second character is not a letter A–Z other than I/O;
/// * `plate.serial` — an ordinary serial is not 4 × `[A-HJ-NP-Z0-9]` plus a final
///   `[A-HJ-NP-Z0-9]` or 挂/学/警/港/澳/领/试/超;
/// * `plate.new_energy` — 8 characters but neither the small
///   (`[A-HJK][A-HJ-NP-Z0-9]\d{4}`) nor the large (`\d{5}[DF]`) new-energy layout.
pub fn validate_plate(s: &str) -> Result<Plate, IdError> {
    let number = normalize_plate(s);
    let chars: Vec<char> = number.chars().collect();
    if chars.len() != 7 && chars.len() != 8 {
        return Err(IdError::new(
            "plate.length",
            format!("{s:?} has {} characters after normalisation, expected 7 or 8", chars.len()),
        ));
    }
    let province = chars[0];
    if codes::plate_province_code(province).is_none() {
        return Err(IdError::new("plate.province", format!("{s:?}: {province:?} is not a province abbreviation")));
    }
    let authority = chars[1];
    if !(authority.is_ascii_uppercase() && authority != 'I' && authority != 'O') {
        return Err(IdError::new(
            "plate.authority",
            format!("{s:?}: authority code {authority:?} must be a letter other than I/O"),
        ));
    }
    let serial = &chars[2..];
    let kind = if serial.len() == 5 {
        let last_ok = serial_ok(serial[4]) || "挂学警港澳领试超".contains(serial[4]);
        if !serial[..4].iter().all(|c| serial_ok(*c)) || !last_ok {
            return Err(IdError::new("plate.serial", format!("{s:?}: serial must be letters (no I/O) or digits")));
        }
        PlateKind::Ordinary
    } else {
        let digits = |cs: &[char]| cs.iter().all(char::is_ascii_digit);
        if "ABCDEFGHJK".contains(serial[0]) && serial_ok(serial[1]) && digits(&serial[2..]) {
            PlateKind::NewEnergySmall
        } else if digits(&serial[..5]) && matches!(serial[5], 'D' | 'F') {
            PlateKind::NewEnergyLarge
        } else {
            return Err(IdError::new(
                "plate.new_energy",
                format!("{s:?}: 8-character plates must be new-energy (e.g. 浙ED12345 or 浙E12345D)"),
            ));
        }
    };
    Ok(Plate { number, province, authority, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good() {
        for (s, kind, norm) in [
            ("浙E12345", PlateKind::Ordinary, "浙E12345"),
            ("浙EA123B", PlateKind::Ordinary, "浙EA123B"),
            ("浙E·A1234", PlateKind::Ordinary, "浙EA1234"),
            ("浙 e 12345", PlateKind::Ordinary, "浙E12345"),
            ("浙Ｅ１２３４５", PlateKind::Ordinary, "浙E12345"),
            ("浙E1234挂", PlateKind::Ordinary, "浙E1234挂"),
            ("浙E1234警", PlateKind::Ordinary, "浙E1234警"),
            ("粤Z1234港", PlateKind::Ordinary, "粤Z1234港"),
            ("浙ED12345", PlateKind::NewEnergySmall, "浙ED12345"),
            ("浙EDA1234", PlateKind::NewEnergySmall, "浙EDA1234"),
            ("浙EF12345", PlateKind::NewEnergySmall, "浙EF12345"),
            ("浙E12345D", PlateKind::NewEnergyLarge, "浙E12345D"),
            ("京AF12345", PlateKind::NewEnergySmall, "京AF12345"),
        ] {
            let p = validate_plate(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(p.kind, kind, "{s}");
            assert_eq!(p.number, norm);
        }
        assert!(validate_plate("浙E12345").unwrap().is_huzhou());
        assert!(!validate_plate("浙D12345").unwrap().is_huzhou());
    }

    #[test]
    fn bad() {
        for (s, rule) in [
            ("浙E1234", "plate.length"),
            ("浙E1234567", "plate.length"),
            ("", "plate.length"),
            ("A E12345", "plate.province"),
            ("港E12345", "plate.province"),
            ("浙I12345", "plate.authority"),
            ("浙112345", "plate.authority"),
            ("浙E1O345", "plate.serial"),
            ("浙E1234I", "plate.serial"),
            ("浙E123#5", "plate.serial"),
            ("浙EX12345", "plate.new_energy"),
            ("浙ED1234A", "plate.new_energy"),
            ("浙E12345A", "plate.new_energy"),
            ("浙EDI1234", "plate.new_energy"),
        ] {
            assert_eq!(validate_plate(s).unwrap_err().rule, rule, "{s}");
        }
    }
}
