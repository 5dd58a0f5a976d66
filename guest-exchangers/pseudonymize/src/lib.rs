//! `pseudonymize`: replaces one column with a keyed pseudonym of each value, so
//! a table can be shared or joined on that column without revealing it.
//!
//! Each non-null value becomes the first 16 bytes of HMAC-SHA256(`key`, value),
//! as 32 lowercase hex characters (utf8); nulls stay null and every other column
//! passes through untouched. The same key gives the same pseudonym for the same
//! value in every batch and every stream, so pseudonymised tables still join.
//! Strings are hashed by their UTF-8 bytes, integers by their little-endian bytes.
//!
//! Params: `column` (required), `key` (required, at least 16 bytes), `rounds`
//! (optional, 1 to [`MAX_ROUNDS`], default 1): the MAC is applied that many times,
//! each round to the last one's digest, as key stretching does, so that a leaked
//! key costs an attacker that many MACs per guess. The work is per row and per
//! batch, so the session is stateless: the server may run one stream on several
//! instances.

use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use hmac::{Hmac, Mac};
use mallard_exchanger::prelude::*;
use sha2::Sha256;

/// Shortest key accepted: shorter keys make pseudonyms guessable.
pub const MIN_KEY_BYTES: usize = 16;

/// Most MAC rounds per value.
pub const MAX_ROUNDS: u32 = 1024;

/// Hex characters per pseudonym (16 bytes of the MAC).
const PSEUDONYM_CHARS: usize = 32;

/// Per-stream state: the keyed MAC (its pads already absorbed), the column and
/// the output schema.
pub struct Pseudonymize {
    mac: Hmac<Sha256>,
    rounds: u32,
    column: usize,
    output: SchemaRef,
}

impl Pseudonymize {
    fn pseudonym(&self, value: &[u8], out: &mut [u8; PSEUDONYM_CHARS]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut digest = self.mac.clone().chain_update(value).finalize().into_bytes();
        for _ in 1..self.rounds {
            digest = self
                .mac
                .clone()
                .chain_update(digest)
                .finalize()
                .into_bytes();
        }
        for (i, byte) in digest[..PSEUDONYM_CHARS / 2].iter().enumerate() {
            out[2 * i] = HEX[(byte >> 4) as usize];
            out[2 * i + 1] = HEX[(byte & 0xf) as usize];
        }
    }

    fn pseudonyms(&self, column: &dyn Array) -> ArrayRef {
        let rows = column.len();
        let mut out = StringBuilder::with_capacity(rows, rows * PSEUDONYM_CHARS);
        let mut hex = [0u8; PSEUDONYM_CHARS];
        let mut append = |value: Option<&[u8]>| match value {
            Some(bytes) => {
                self.pseudonym(bytes, &mut hex);
                out.append_value(std::str::from_utf8(&hex).expect("hex is ASCII"));
            }
            None => out.append_null(),
        };
        match column.data_type() {
            DataType::Utf8 => column
                .as_string::<i32>()
                .iter()
                .for_each(|v| append(v.map(str::as_bytes))),
            DataType::LargeUtf8 => column
                .as_string::<i64>()
                .iter()
                .for_each(|v| append(v.map(str::as_bytes))),
            DataType::Int64 => column
                .as_primitive::<Int64Type>()
                .iter()
                .for_each(|v| append(v.map(i64::to_le_bytes).as_ref().map(|b| &b[..]))),
            DataType::Int32 => column
                .as_primitive::<Int32Type>()
                .iter()
                .for_each(|v| append(v.map(i32::to_le_bytes).as_ref().map(|b| &b[..]))),
            other => unreachable!("open accepts no {other}"),
        }
        Arc::new(out.finish())
    }
}

impl Exchanger for Pseudonymize {
    const INFO: Info = Info {
        name: "pseudonymize",
        version: "1.0.0",
        description: "replaces `column` with a keyed pseudonym (HMAC-SHA256 of `key`, 32 hex chars)",
    };

    fn open(input: SchemaRef, params: &Params) -> Result<Self, ExchangeError> {
        let name = params.get("column").ok_or_else(|| {
            ExchangeError::InvalidParams("give `column`, the column to replace".into())
        })?;
        let key = params
            .get("key")
            .ok_or_else(|| ExchangeError::InvalidParams("give `key`, the secret".into()))?;
        if key.len() < MIN_KEY_BYTES {
            return Err(ExchangeError::InvalidParams(format!(
                "`key` is {} bytes; give at least {MIN_KEY_BYTES}",
                key.len()
            )));
        }
        let rounds = match params.get("rounds") {
            None => 1,
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|r| (1..=MAX_ROUNDS).contains(r))
                .ok_or_else(|| {
                    ExchangeError::InvalidParams(format!(
                        "`rounds` is {text:?}; give a whole number from 1 to {MAX_ROUNDS}"
                    ))
                })?,
        };
        let (column, field) = input
            .column_with_name(name)
            .ok_or_else(|| ExchangeError::InvalidInput(format!("input has no `{name}` column")))?;
        if !matches!(
            field.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Int64 | DataType::Int32
        ) {
            return Err(ExchangeError::InvalidInput(format!(
                "`{name}` is {}; pseudonymize takes utf8, large utf8, int64 or int32",
                field.data_type()
            )));
        }
        let mut fields: Vec<_> = input.fields().iter().cloned().collect();
        fields[column] = Arc::new(Field::new(name, DataType::Utf8, field.is_nullable()));
        let output = Schema::new(fields).with_metadata(input.metadata().clone());
        let mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
            .map_err(|e| ExchangeError::InvalidParams(format!("`key`: {e}")))?;
        Ok(Self {
            mac,
            rounds,
            column,
            output: Arc::new(output),
        })
    }

    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn push(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>, ExchangeError> {
        let mut columns = batch.columns().to_vec();
        columns[self.column] = self.pseudonyms(batch.column(self.column).as_ref());
        Ok(vec![RecordBatch::try_new(self.output.clone(), columns)?])
    }

    fn stateless(&self) -> bool {
        true
    }

    /// Only the replaced column's values are read; the rest pass through.
    fn reads(&self) -> Option<Vec<usize>> {
        Some(vec![self.column])
    }
}

export_exchanger!(Pseudonymize);

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};

    const KEY: &str = "a key of sixteen+ bytes";

    fn open(input: &SchemaRef, pairs: &[(&str, &str)]) -> Result<Pseudonymize, ExchangeError> {
        let pairs = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Pseudonymize::open(input.clone(), &Params::new(pairs))
    }

    fn flights() -> (SchemaRef, RecordBatch) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("tail", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("N123"), None, Some("N123")])),
            ],
        )
        .unwrap();
        (schema, batch)
    }

    #[test]
    fn equal_values_get_equal_pseudonyms_nulls_stay_and_other_columns_pass() {
        let (schema, batch) = flights();
        let mut ex = open(&schema, &[("column", "tail"), ("key", KEY)]).unwrap();
        let out = ex.push(batch.clone()).unwrap().remove(0);
        let tails = out.column(1).as_string::<i32>();
        assert_eq!(tails.value(0).len(), PSEUDONYM_CHARS);
        assert_eq!(tails.value(0), tails.value(2));
        assert!(tails.is_null(1));
        assert_ne!(tails.value(0), "N123");
        assert!(
            Arc::ptr_eq(out.column(0), batch.column(0)),
            "passed through"
        );
        let mut other_key = open(
            &schema,
            &[("column", "tail"), ("key", "another key, 16+ b")],
        )
        .unwrap();
        let other = other_key.push(batch).unwrap().remove(0);
        assert_ne!(other.column(1).as_string::<i32>().value(0), tails.value(0));
    }

    #[test]
    fn the_pseudonym_is_hmac_sha256_truncated() {
        // RFC 4231 test case 2 key and data, the MAC's first 16 bytes in hex.
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)]));
        let mut ex = Pseudonymize {
            mac: Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap(),
            rounds: 1,
            column: 0,
            output: schema.clone(),
        };
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(vec![
                "what do ya want for nothing?",
            ]))],
        )
        .unwrap();
        let out = ex.push(batch).unwrap().remove(0);
        assert_eq!(
            out.column(0).as_string::<i32>().value(0),
            "5bdcc146bf60754e6a042426089575c7"
        );
    }

    #[test]
    fn each_round_macs_the_digest_before_it() {
        let (schema, batch) = flights();
        let mut ex = open(
            &schema,
            &[("column", "tail"), ("key", KEY), ("rounds", "3")],
        )
        .unwrap();
        let out = ex.push(batch).unwrap().remove(0);
        let mac = |data: &[u8]| {
            Hmac::<Sha256>::new_from_slice(KEY.as_bytes())
                .unwrap()
                .chain_update(data)
                .finalize()
                .into_bytes()
        };
        let expected: String = mac(&mac(&mac(b"N123")))[..PSEUDONYM_CHARS / 2]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(out.column(1).as_string::<i32>().value(0), expected);
        for bad in ["0", "1025", "-1", "two", ""] {
            let refused = open(
                &schema,
                &[("column", "tail"), ("key", KEY), ("rounds", bad)],
            );
            assert!(
                matches!(&refused, Err(ExchangeError::InvalidParams(m)) if m.contains("rounds")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn missing_or_short_keys_and_unknown_columns_are_refused() {
        let (schema, _) = flights();
        let short = open(&schema, &[("column", "tail"), ("key", "short")])
            .err()
            .unwrap();
        assert!(matches!(short, ExchangeError::InvalidParams(m) if m.contains("at least 16")));
        assert!(matches!(
            open(&schema, &[("column", "tail")]),
            Err(ExchangeError::InvalidParams(_))
        ));
        assert!(matches!(
            open(&schema, &[("key", KEY)]),
            Err(ExchangeError::InvalidParams(_))
        ));
        let missing = open(&schema, &[("column", "nope"), ("key", KEY)])
            .err()
            .unwrap();
        assert!(matches!(missing, ExchangeError::InvalidInput(_)));
        assert!(
            open(&schema, &[("column", "id"), ("key", KEY)])
                .unwrap()
                .stateless()
        );
    }
}
