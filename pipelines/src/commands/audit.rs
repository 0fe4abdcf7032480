//! `maestro audit`: verify the audit trail's hash chain and daily digests, digest new records
//! (signed with the user's ed25519 key), and make a key pair.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::Context;
use maestro_datasets::Lake;
use maestro_datasets::audit_trail::{
    DIGEST_FILE, digest, generate_key_pair, read_public_key, read_signing_key, verify,
};

use crate::Outcome;
use crate::cli::AuditCommand;
use crate::output::print;

pub fn run(command: &AuditCommand) -> anyhow::Result<Outcome> {
    match command {
        AuditCommand::Verify { lake, public_key } => {
            let lake = Lake::open_existing(&lake.lake)?;
            let key = public_key.as_deref().map(read_public_key).transpose()?;
            let result = verify(&lake, key.as_ref())?;
            let mut out = format!(
                "audit trail: {} records, {} digest entries checked{}, {} records not digested yet\n",
                result.records,
                result.digests_checked,
                if key.is_some() {
                    format!(" ({} signatures)", result.signatures_checked)
                } else {
                    String::new()
                },
                result.undigested
            );
            if result.is_intact() {
                out.push_str("intact\n");
                print(&out)?;
                return Ok(Outcome::Ok);
            }
            let _ = writeln!(
                out,
                "BROKEN: {} problems; the first broken record: {}",
                result.problems.len(),
                result.problems[0]
            );
            for problem in result.problems.iter().skip(1).take(20) {
                let _ = writeln!(out, "  {problem}");
            }
            if result.problems.len() > 21 {
                let _ = writeln!(out, "  ... and {} more", result.problems.len() - 21);
            }
            print(&out)?;
            Ok(Outcome::CheckFailed)
        }
        AuditCommand::Digest { lake, signing_key } => {
            let lake = Lake::open_existing(&lake.lake)?;
            let key = signing_key.as_deref().map(read_signing_key).transpose()?;
            let run = digest(&lake, key.as_ref())?;
            let mut out = format!(
                "{} digest entries added to {} ({} already there){}\n",
                run.added.len(),
                lake.root().join(DIGEST_FILE).display(),
                run.existing,
                if key.is_some() { ", signed" } else { "" }
            );
            for entry in &run.added {
                let _ = writeln!(
                    out,
                    "  {} {:>6} records  root {}",
                    entry.date, entry.records, entry.merkle_root
                );
            }
            print(&out)?;
            Ok(Outcome::Ok)
        }
        AuditCommand::Keygen { out } => {
            let (secret, public) = generate_key_pair();
            let secret_path = out.with_extension("key");
            let public_path = out.with_extension("pub");
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&secret_path).with_context(|| {
                format!("creating {} (it must not exist)", secret_path.display())
            })?;
            writeln!(file, "{secret}")?;
            std::fs::write(&public_path, format!("{public}\n"))
                .with_context(|| format!("writing {}", public_path.display()))?;
            print(&format!(
                "secret key {} (keep it away from the lake)\npublic key {}\n",
                secret_path.display(),
                public_path.display()
            ))?;
            Ok(Outcome::Ok)
        }
    }
}
