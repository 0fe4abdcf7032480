//! Audit-trail integrity: the hash chain of `audit_events`, a Merkle root per day, and a digest
//! file that chains the roots and can be signed with ed25519.
//!
//! Ingest gives every audit record a `seq` and a `hash` = sha256(previous hash, canonical
//! record), so [`verify`] can recompute the chain and name the first record that was modified,
//! deleted, inserted or reordered. A chain alone cannot show that records were cut off its end,
//! or that someone rewrote the chain whole; [`digest`] therefore records, per UTC day of the
//! records' time, how many records it held and the Merkle root of their hashes (RFC 6962 style:
//! leaves `sha256(0x00 || hash)`, nodes `sha256(0x01 || left || right)`, an odd node carried
//! up), each entry's digest chained to the previous entry's and optionally signed. Records that
//! arrive late for a day already digested go into a further entry for that day, so a digest never
//! changes once written. The digest file lives beside the lake's tables in
//! `_audit_digests.jsonl`; keep a copy (or its signature key) where those who could alter the
//! lake cannot.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, Int64Array, StringArray, TimestampMicrosecondArray};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::ingest::{GENESIS_HASH, chain_hash};
use crate::lake::{Lake, read_parquet, replace_file};
use crate::schema::{AuditEvent, Row, Ts};

/// The digest file, under the lake root.
pub const DIGEST_FILE: &str = "_audit_digests.jsonl";

/// One entry of the digest file: the records of one UTC day taken in by one digest run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayDigest {
    /// The UTC date of the records' time.
    pub date: String,
    /// How many records of that date the entry covers.
    pub records: u64,
    /// The lowest and highest `seq` among them.
    pub first_seq: i64,
    /// See `first_seq`.
    pub last_seq: i64,
    /// Merkle root of their hashes in `seq` order (hex).
    pub merkle_root: String,
    /// The digest of the previous entry (zeros for the first).
    pub previous_digest: String,
    /// sha256 over the previous digest and this entry's fields (hex).
    pub digest: String,
    /// ed25519 signature of `digest` (hex), when a key was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// What verification found.
#[derive(Debug, Default)]
pub struct Verification {
    /// Audit records read.
    pub records: u64,
    /// Digest entries checked.
    pub digests_checked: usize,
    /// Signatures checked.
    pub signatures_checked: usize,
    /// Records no digest covers yet (not an error: digest them).
    pub undigested: u64,
    /// Every problem, the first broken record first.
    pub problems: Vec<String>,
}

impl Verification {
    /// Whether the trail is intact.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

struct Record {
    seq: i64,
    event_id: String,
    date: String,
    prev_hash: String,
    hash: String,
    canonical: String,
    /// The columns reports read, as stored: (name, value).
    columns: Vec<(&'static str, Option<String>)>,
}

impl Record {
    fn name(&self) -> String {
        format!("seq {} (event {}, {})", self.seq, self.event_id, self.date)
    }
}

fn read_records(lake: &Lake) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    for part in lake.parts(&AuditEvent::TABLE)? {
        for batch in read_parquet(&part)? {
            let text = |name: &str| -> Result<&StringArray> {
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                    .ok_or_else(|| wrong_type(&part, name))
            };
            let seq = batch
                .column_by_name("seq")
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                .ok_or_else(|| wrong_type(&part, "seq"))?;
            let at = batch
                .column_by_name("at")
                .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
                .ok_or_else(|| wrong_type(&part, "at"))?;
            let (event_id, prev_hash, hash, canonical) = (
                text("event_id")?,
                text("prev_hash")?,
                text("hash")?,
                text("canonical")?,
            );
            let scope = batch
                .column_by_name("scope")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| wrong_type(&part, "scope"))?;
            let mut texts = Vec::new();
            for name in ["actor", "action", "resource", "outcome", "source"] {
                texts.push((name, text(name)?));
            }
            for i in 0..batch.num_rows() {
                let mut columns = vec![
                    ("event_id", Some(event_id.value(i).to_string())),
                    ("at", Some(at.value(i).to_string())),
                ];
                columns.extend(
                    texts
                        .iter()
                        .map(|(name, array)| (*name, Some(array.value(i).to_string()))),
                );
                columns.push((
                    "scope",
                    (!scope.is_null(i)).then(|| scope.value(i).to_string()),
                ));
                records.push(Record {
                    seq: seq.value(i),
                    event_id: event_id.value(i).to_string(),
                    date: Ts(at.value(i)).date(),
                    prev_hash: prev_hash.value(i).to_string(),
                    hash: hash.value(i).to_string(),
                    canonical: canonical.value(i).to_string(),
                    columns,
                });
            }
        }
    }
    // Ties (a duplicated seq) keep a stable order so the report is the same on every run.
    records.sort_by(|a, b| (a.seq, &a.hash).cmp(&(b.seq, &b.hash)));
    Ok(records)
}

fn wrong_type(part: &Path, column: &str) -> Error {
    Error::SchemaMismatch {
        table: AuditEvent::TABLE.name.into(),
        reason: format!(
            "{}: column {column} is missing or has the wrong type",
            part.display()
        ),
    }
}

/// Recomputes the chain: each record's hash from its content, its link to the record before,
/// and the run of sequence numbers. Problems name the record.
fn check_chain(records: &[Record], problems: &mut Vec<String>) {
    let mut expected_prev = GENESIS_HASH.to_string();
    let mut expected_seq = 1i64;
    for record in records {
        if record.seq > expected_seq {
            problems.push(format!(
                "{}: records {}..{} are missing (deleted?)",
                record.name(),
                expected_seq,
                record.seq - 1
            ));
        } else if record.seq < expected_seq {
            problems.push(format!(
                "{}: the sequence number repeats (an inserted record?)",
                record.name()
            ));
        }
        if record.prev_hash != expected_prev {
            problems.push(format!(
                "{}: prev_hash does not match the hash of the record before (inserted, deleted or reordered)",
                record.name()
            ));
        }
        if chain_hash(&record.prev_hash, &record.canonical) != record.hash {
            problems.push(format!(
                "{}: the hash does not match the record's content (modified)",
                record.name()
            ));
        } else if let Some(column) = modified_column(record) {
            problems.push(format!(
                "{}: its {column} column no longer says what the hashed record says (modified)",
                record.name()
            ));
        }
        expected_prev = record.hash.clone();
        expected_seq = record.seq + 1;
    }
}

/// The first stored column that differs from what the record's canonical text reads as.
fn modified_column(record: &Record) -> Option<&'static str> {
    let draft = match crate::readers::audit::redraft(&record.canonical) {
        Ok(draft) => draft,
        Err(_) => return Some("canonical"),
    };
    let expected = [
        ("event_id", Some(draft.event_id)),
        ("at", Some(draft.at.0.to_string())),
        ("actor", Some(draft.actor)),
        ("action", Some(draft.action)),
        ("resource", Some(draft.resource)),
        ("outcome", Some(draft.outcome)),
        ("source", Some(draft.source)),
        ("scope", draft.scope),
    ];
    expected
        .into_iter()
        .zip(&record.columns)
        .find(|((name, want), (stored_name, stored))| {
            debug_assert_eq!(name, stored_name);
            want != stored
        })
        .map(|((name, _), _)| name)
}

/// Merkle root of hex leaf hashes (RFC 6962 domain separation); zeros for none.
fn merkle_root(leaves: &[&str]) -> String {
    if leaves.is_empty() {
        return GENESIS_HASH.to_string();
    }
    let mut level: Vec<[u8; 32]> = leaves
        .iter()
        .map(|leaf| {
            let mut h = Sha256::new();
            h.update([0u8]);
            h.update(leaf.as_bytes());
            h.finalize().into()
        })
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => {
                    let mut h = Sha256::new();
                    h.update([1u8]);
                    h.update(left);
                    h.update(right);
                    h.finalize().into()
                }
                [odd] => *odd,
                _ => unreachable!("chunks of two"),
            })
            .collect();
    }
    hex(&level[0])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn entry_digest(
    previous: &str,
    date: &str,
    records: u64,
    first: i64,
    last: i64,
    root: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(format!("{previous}\n{date}\n{records}\n{first}\n{last}\n{root}").as_bytes());
    hex(&h.finalize())
}

/// The digest file of a lake.
pub fn digest_path(lake: &Lake) -> PathBuf {
    lake.root().join(DIGEST_FILE)
}

fn read_digests(path: &Path) -> Result<Vec<DayDigest>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| Error::Corrupt {
                path: path.to_path_buf(),
                reason: format!("line {}: not a digest entry: {e}", i + 1),
            })
        })
        .collect()
}

/// The records an entry covers: those of its date with seq in its range.
fn covered<'r>(records: &'r [Record], entry: &DayDigest) -> Vec<&'r Record> {
    records
        .iter()
        .filter(|r| r.date == entry.date && (entry.first_seq..=entry.last_seq).contains(&r.seq))
        .collect()
}

/// Checks the chain, and every digest entry (and its signature when `public_key` is given).
pub fn verify(lake: &Lake, public_key: Option<&VerifyingKey>) -> Result<Verification> {
    let records = read_records(lake)?;
    let mut result = Verification {
        records: records.len() as u64,
        ..Default::default()
    };
    check_chain(&records, &mut result.problems);
    let digests = read_digests(&digest_path(lake))?;
    let mut previous = GENESIS_HASH.to_string();
    let mut covered_seqs = std::collections::BTreeSet::new();
    for (i, entry) in digests.iter().enumerate() {
        let line = i + 1;
        let mine = covered(&records, entry);
        covered_seqs.extend(mine.iter().map(|r| r.seq));
        let root = merkle_root(&mine.iter().map(|r| r.hash.as_str()).collect::<Vec<_>>());
        if entry.previous_digest != previous
            || entry.digest
                != entry_digest(
                    &entry.previous_digest,
                    &entry.date,
                    entry.records,
                    entry.first_seq,
                    entry.last_seq,
                    &entry.merkle_root,
                )
        {
            result.problems.push(format!(
                "digest line {line} ({}): the digest chain is broken (the digest file was edited)",
                entry.date
            ));
        }
        if mine.len() as u64 != entry.records {
            result.problems.push(format!(
                "{}: the digest of line {line} covers {} records of seq {}..{}, the lake holds {} (records deleted or inserted)",
                entry.date,
                entry.records,
                entry.first_seq,
                entry.last_seq,
                mine.len()
            ));
        } else if root != entry.merkle_root {
            result.problems.push(format!(
                "{}: the Merkle root of seq {}..{} differs from digest line {line} (records modified or replaced)",
                entry.date, entry.first_seq, entry.last_seq
            ));
        }
        if let Some(key) = public_key {
            let valid = entry
                .signature
                .as_deref()
                .and_then(unhex)
                .and_then(|bytes| Signature::from_slice(&bytes).ok())
                .is_some_and(|signature| key.verify(entry.digest.as_bytes(), &signature).is_ok());
            if !valid {
                result.problems.push(format!(
                    "digest line {line} ({}): {} with the given public key",
                    entry.date,
                    if entry.signature.is_some() {
                        "the signature does not verify"
                    } else {
                        "the entry is not signed"
                    }
                ));
            }
            result.signatures_checked += 1;
        }
        result.digests_checked += 1;
        previous = entry.digest.clone();
    }
    result.undigested = records
        .iter()
        .filter(|r| !covered_seqs.contains(&r.seq))
        .count() as u64;
    Ok(result)
}

/// What a digest run added.
#[derive(Debug, Default)]
pub struct DigestRun {
    /// Entries appended.
    pub added: Vec<DayDigest>,
    /// Entries the file already held.
    pub existing: usize,
}

/// Appends an entry per UTC day for every record no entry covers yet, signed when a key is
/// given. Refuses when the trail does not verify: a digest must never bless tampering.
pub fn digest(lake: &Lake, signing_key: Option<&SigningKey>) -> Result<DigestRun> {
    let check = verify(lake, None)?;
    if !check.is_intact() {
        return Err(Error::Usage(format!(
            "the audit trail does not verify, so it is not digested: {}",
            check.problems[0]
        )));
    }
    let path = digest_path(lake);
    let mut digests = read_digests(&path)?;
    let records = read_records(lake)?;
    let covered_seqs: std::collections::BTreeSet<i64> = digests
        .iter()
        .flat_map(|entry| covered(&records, entry).into_iter().map(|r| r.seq))
        .collect();
    let mut by_date: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for record in records.iter().filter(|r| !covered_seqs.contains(&r.seq)) {
        by_date.entry(&record.date).or_default().push(record);
    }
    let existing = digests.len();
    let mut previous = digests
        .last()
        .map_or(GENESIS_HASH.to_string(), |d| d.digest.clone());
    let mut added = Vec::new();
    for (date, day) in by_date {
        let first_seq = day.first().map_or(0, |r| r.seq);
        let last_seq = day.last().map_or(0, |r| r.seq);
        let merkle_root = merkle_root(&day.iter().map(|r| r.hash.as_str()).collect::<Vec<_>>());
        let records_count = day.len() as u64;
        let digest = entry_digest(
            &previous,
            date,
            records_count,
            first_seq,
            last_seq,
            &merkle_root,
        );
        let signature = signing_key.map(|key| hex(&key.sign(digest.as_bytes()).to_bytes()));
        let entry = DayDigest {
            date: date.to_string(),
            records: records_count,
            first_seq,
            last_seq,
            merkle_root,
            previous_digest: previous.clone(),
            digest: digest.clone(),
            signature,
        };
        previous = digest;
        added.push(entry);
    }
    if !added.is_empty() {
        digests.extend(added.iter().cloned());
        let mut text = String::new();
        for entry in &digests {
            text.push_str(
                &serde_json::to_string(entry).map_err(|e| Error::Internal(e.to_string()))?,
            );
            text.push('\n');
        }
        replace_file(&path, text.as_bytes())?;
    }
    Ok(DigestRun { added, existing })
}

/// Reads an ed25519 signing key: 32 bytes as 64 hex digits.
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    let bytes = read_key_bytes(path)?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Reads an ed25519 public key: 32 bytes as 64 hex digits.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey> {
    let bytes = read_key_bytes(path)?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| {
        Error::Usage(format!(
            "{}: not an ed25519 public key: {e}",
            path.display()
        ))
    })
}

fn read_key_bytes(path: &Path) -> Result<[u8; 32]> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    unhex(&text)
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| {
            Error::Usage(format!(
                "{}: a key file holds 32 bytes as 64 hex digits",
                path.display()
            ))
        })
}

/// A new key pair from cryptographically secure randomness, as hex: (secret, public).
pub fn generate_key_pair() -> (String, String) {
    use rand::RngCore;
    let mut seed = [0u8; 32];
    // The thread generator is a CSPRNG seeded and reseeded from the operating system.
    rand::rng().fill_bytes(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    (hex(&seed), hex(key.verifying_key().as_bytes()))
}
