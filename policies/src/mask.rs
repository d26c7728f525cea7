//! Column masks as DataFusion scalar UDFs: partial masks and keyed tokens.
//!
//! De-identification per GB/T 35273-2020 §3.15 / PIPL art. 51: partial display
//! (MaskPartial) and keyed pseudonyms (HashToken, HMAC-SHA256). The token key
//! is never logged: [`MaskFunctions`]' `Debug` prints only whether a key is set.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::prelude::SessionContext;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::MaskKind;

/// Name of the token UDF. Queries may not call it directly (it would be an
/// oracle: `lianqin_hash_token('3305...')` confirms a guessed ID); `enforce`
/// refuses such queries.
pub const TOKEN_FN: &str = "lianqin_hash_token";

/// Mask one string value (by characters, so Chinese text is safe).
///
/// * `CitizenId`: keep the first 6 and last 4 (`330502********123X`); a
///   value shorter than a 15-digit ID (a phone number kept as the
///   identifier of a person element without an ID) as a phone;
/// * `Phone`: keep the first 3 and last 4 (`138****5678`);
/// * `Keep { first, last }`: keep those many characters at each end.
///
/// A value too short to keep anything while hiding at least one character is
/// masked entirely.
pub fn mask_value(kind: MaskKind, s: &str) -> String {
    let (first, last) = match kind {
        MaskKind::CitizenId if s.chars().count() >= 15 => (6, 4),
        MaskKind::CitizenId | MaskKind::Phone => (3, 4),
        MaskKind::Keep { first, last } => (first, last),
    };
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    if n <= first + last {
        return "*".repeat(n);
    }
    let mut out = String::with_capacity(s.len());
    out.extend(&chars[..first]);
    out.extend(std::iter::repeat_n('*', n - first - last));
    out.extend(&chars[n - last..]);
    out
}

/// Keyed token of a value: lowercase hex of HMAC-SHA256(key, value).
pub fn token_value(key: &[u8], s: &str) -> String {
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(s.as_bytes());
            hex::encode(m.finalize().into_bytes())
        }
        // HMAC accepts any key length; unreachable in practice. Fail closed.
        Err(_) => String::new(),
    }
}

fn string_sig() -> Signature {
    Signature::uniform(1, vec![DataType::Utf8, DataType::LargeUtf8, DataType::Utf8View], Volatility::Immutable)
}

/// Apply `f` to every non-null string of a Utf8/LargeUtf8/Utf8View argument,
/// returning the same type.
fn map_strings(args: ScalarFunctionArgs, f: &dyn Fn(&str) -> String) -> DfResult<ColumnarValue> {
    let [arg] = args.args.as_slice() else {
        return Err(DataFusionError::Plan("mask functions take one argument".into()));
    };
    match arg {
        ColumnarValue::Scalar(v) => {
            let out = match v {
                ScalarValue::Utf8(s) => ScalarValue::Utf8(s.as_deref().map(f)),
                ScalarValue::LargeUtf8(s) => ScalarValue::LargeUtf8(s.as_deref().map(f)),
                ScalarValue::Utf8View(s) => ScalarValue::Utf8View(s.as_deref().map(f)),
                ScalarValue::Null => ScalarValue::Utf8(None),
                other => {
                    return Err(DataFusionError::Plan(format!("mask of non-string {}", other.data_type())));
                }
            };
            Ok(ColumnarValue::Scalar(out))
        }
        ColumnarValue::Array(a) => {
            let dt = a.data_type().clone();
            let utf8 = cast(a, &DataType::Utf8)?;
            let sa = utf8
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| DataFusionError::Internal("mask: cast to Utf8 failed".into()))?;
            let out: StringArray = sa.iter().map(|v| v.map(f)).collect();
            let out: ArrayRef = Arc::new(out);
            let out = if dt == DataType::Utf8 { out } else { cast(&out, &dt)? };
            Ok(ColumnarValue::Array(out))
        }
    }
}

fn same_string_type(arg_types: &[DataType]) -> DfResult<DataType> {
    match arg_types {
        [t @ (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)] => Ok(t.clone()),
        [DataType::Null] => Ok(DataType::Utf8),
        _ => Err(DataFusionError::Plan(format!("mask functions take one string argument, got {arg_types:?}"))),
    }
}

/// Partial-mask UDF for one [`MaskKind`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MaskUdf {
    kind: MaskKind,
    name: String,
    signature: Signature,
}

impl MaskUdf {
    fn new(kind: MaskKind) -> Self {
        let name = match kind {
            MaskKind::CitizenId => "lianqin_mask_citizen_id".to_string(),
            MaskKind::Phone => "lianqin_mask_phone".to_string(),
            MaskKind::Keep { first, last } => format!("lianqin_mask_keep_{first}_{last}"),
        };
        MaskUdf { kind, name, signature: string_sig() }
    }
}

impl ScalarUDFImpl for MaskUdf {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        same_string_type(arg_types)
    }
    fn is_strict(&self) -> bool {
        true
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let kind = self.kind;
        map_strings(args, &|s| mask_value(kind, s))
    }
}

/// Keyed token UDF (HMAC-SHA256, hex).
#[derive(Clone, PartialEq, Eq)]
struct TokenUdf {
    key: Arc<Vec<u8>>,
    signature: Signature,
}

impl std::fmt::Debug for TokenUdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenUdf { key: <redacted> }")
    }
}

impl Hash for TokenUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Do not feed the key into hashes that might be exposed; the name suffices.
        TOKEN_FN.hash(state);
    }
}

impl ScalarUDFImpl for TokenUdf {
    fn name(&self) -> &str {
        TOKEN_FN
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        same_string_type(arg_types)
    }
    fn is_strict(&self) -> bool {
        true
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let key = Arc::clone(&self.key);
        map_strings(args, &move |s| token_value(&key, s))
    }
}

/// The mask UDF instances that [`crate::enforce`] puts into rewritten plans.
///
/// Holds the token key (if any). Cheap to clone.
#[derive(Clone)]
pub struct MaskFunctions {
    key: Option<Arc<Vec<u8>>>,
}

impl std::fmt::Debug for MaskFunctions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskFunctions").field("token_key_set", &self.key.is_some()).finish()
    }
}

impl MaskFunctions {
    /// Mask functions with a token key. An empty key counts as no key.
    pub fn new(token_key: &[u8]) -> Self {
        MaskFunctions { key: if token_key.is_empty() { None } else { Some(Arc::new(token_key.to_vec())) } }
    }

    /// Mask functions without a token key: HashToken columns read as NULL.
    pub fn without_key() -> Self {
        MaskFunctions { key: None }
    }

    /// Key from the environment variable `LIANQIN_TOKEN_KEY` (its UTF-8 bytes),
    /// or no key when unset/empty.
    pub fn from_env() -> Self {
        match std::env::var("LIANQIN_TOKEN_KEY") {
            Ok(k) if !k.is_empty() => MaskFunctions::new(k.as_bytes()),
            _ => MaskFunctions::without_key(),
        }
    }

    /// Whether a token key is configured.
    pub fn has_token_key(&self) -> bool {
        self.key.is_some()
    }

    /// The partial-mask UDF for `kind`.
    pub fn partial(&self, kind: MaskKind) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(MaskUdf::new(kind)))
    }

    /// The keyed token UDF, if a key is configured.
    pub fn token(&self) -> Option<Arc<ScalarUDF>> {
        self.key
            .as_ref()
            .map(|k| Arc::new(ScalarUDF::new_from_impl(TokenUdf { key: Arc::clone(k), signature: string_sig() })))
    }

    /// Register the named mask functions in `ctx`: `lianqin_mask_citizen_id`,
    /// `lianqin_mask_phone` and, when a key is set, `lianqin_hash_token` (which
    /// [`crate::enforce`] nevertheless refuses in user queries).
    pub fn register(&self, ctx: &SessionContext) {
        ctx.register_udf(ScalarUDF::new_from_impl(MaskUdf::new(MaskKind::CitizenId)));
        ctx.register_udf(ScalarUDF::new_from_impl(MaskUdf::new(MaskKind::Phone)));
        if let Some(t) = self.token() {
            ctx.register_udf(t.as_ref().clone());
        }
    }
}

/// Register the mask functions in `ctx` with `token_key`, and return the
/// handle to pass to [`crate::enforce`].
pub fn register_mask_functions(ctx: &SessionContext, token_key: &[u8]) -> MaskFunctions {
    let m = MaskFunctions::new(token_key);
    m.register(ctx);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(mask_value(MaskKind::CitizenId, "33050219900101123X"), "330502********123X");
        assert_eq!(mask_value(MaskKind::Phone, "13812345678"), "138****5678");
        assert_eq!(mask_value(MaskKind::Keep { first: 1, last: 0 }, "张三丰"), "张**");
        assert_eq!(mask_value(MaskKind::CitizenId, "12345"), "*****");
        // A phone as a person element's identifier: no more shown than a phone mask shows.
        assert_eq!(mask_value(MaskKind::CitizenId, "13812345678"), "138****5678");
        assert_eq!(mask_value(MaskKind::CitizenId, "330502800101123"), "330502*****1123");
        assert_eq!(mask_value(MaskKind::Keep { first: 1, last: 1 }, ""), "");
    }

    #[test]
    fn tokens_are_keyed() {
        let a = token_value(b"k1", "330502199001011234");
        let b = token_value(b"k2", "330502199001011234");
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(a, token_value(b"k1", "330502199001011234"));
    }
}
