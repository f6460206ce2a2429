//! `ferrymail dkim keygen`: writes a new DKIM signing key (mode 0600, never over an
//! existing file) and prints the DNS record that publishes it and the `[[dkim]]` entry
//! that uses it. Ed25519 keys are made here; RSA keys by `openssl genpkey`, as
//! opendkim-genkey does, since ring signs with RSA but does not make RSA keys.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use clap::Args;

use crate::config::DkimAlgorithm;
use crate::dkim::key::{SigningKey, generate_ed25519};
use crate::exit::{self, Failure};

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// The signing domain (d=), e.g. example.org
    #[arg(long)]
    domain: String,
    /// The selector (s=): the key's name under _domainkey
    #[arg(long)]
    selector: String,
    /// rsa-sha256 (every verifier knows it) or ed25519-sha256 (RFC 8463)
    #[arg(long, default_value = "rsa-sha256", value_parser = parse_algorithm)]
    algorithm: DkimAlgorithm,
    /// RSA key size
    #[arg(long, default_value_t = 2048)]
    bits: u32,
    /// Where to write the key (default: SELECTOR.DOMAIN.key here)
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn parse_algorithm(s: &str) -> Result<DkimAlgorithm, String> {
    match s {
        "rsa-sha256" => Ok(DkimAlgorithm::RsaSha256),
        "ed25519-sha256" => Ok(DkimAlgorithm::Ed25519Sha256),
        _ => Err("use rsa-sha256 or ed25519-sha256".into()),
    }
}

pub fn keygen(args: KeygenArgs) -> Result<(), Failure> {
    let usage = |m: String| Failure::new(exit::USAGE, m);
    if !crate::smtp::domain::is_domain(&args.domain) {
        return Err(usage(format!("--domain {:?}: not a domain", args.domain)));
    }
    if !crate::smtp::domain::is_domain(&args.selector) {
        return Err(usage(format!(
            "--selector {:?}: use letters, digits and '-'",
            args.selector
        )));
    }
    if !(2048..=8192).contains(&args.bits) {
        return Err(usage("--bits: 2048 to 8192".into()));
    }
    let pem = match args.algorithm {
        DkimAlgorithm::Ed25519Sha256 => {
            generate_ed25519().map_err(|e| Failure::new(exit::SOFTWARE, e))?
        }
        DkimAlgorithm::RsaSha256 => openssl_rsa(args.bits)?,
    };
    let key = SigningKey::from_pem(pem.as_bytes(), args.algorithm)
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("the new key: {e}")))?;
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("{}.{}.key", args.selector, args.domain)));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&out)
        .map_err(|e| Failure::new(exit::CANTCREAT, format!("{}: {e}", out.display())))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Failure::new(exit::IOERR, format!("{}: {e}", out.display())))?;
    let key_path = std::path::absolute(&out).unwrap_or(out);
    println!("; the key is in {} (keep it private)", key_path.display());
    println!("; publish this record in the DNS zone of {}:", args.domain);
    println!(
        "{}._domainkey.{}. IN TXT {}",
        args.selector,
        args.domain,
        zone_strings(&key.txt_record())
    );
    println!("; and sign with it:");
    println!(
        "; [[dkim]]\n; domain = \"{}\"\n; selector = \"{}\"\n; key = \"{}\"\n; algorithm = \"{}\"",
        args.domain,
        args.selector,
        key_path.display(),
        args.algorithm.tag()
    );
    Ok(())
}

/// A TXT value as zone-file strings of at most 255 octets each (RFC 1035 §3.3.14).
fn zone_strings(value: &str) -> String {
    let parts: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", std::str::from_utf8(c).expect("ASCII")))
        .collect();
    if parts.len() == 1 {
        parts[0].clone()
    } else {
        format!("( {} )", parts.join(" "))
    }
}

fn openssl_rsa(bits: u32) -> Result<String, Failure> {
    let output = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
        .arg(format!("rsa_keygen_bits:{bits}"))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            Failure::new(
                exit::UNAVAILABLE,
                format!("running openssl to make an RSA key: {e} (install openssl, or use --algorithm ed25519-sha256)"),
            )
        })?;
    if !output.status.success() {
        return Err(Failure::new(
            exit::SOFTWARE,
            format!(
                "openssl genpkey failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    String::from_utf8(output.stdout)
        .map_err(|_| Failure::new(exit::SOFTWARE, "openssl wrote something other than PEM"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_records_are_split_for_the_zone_file() {
        assert_eq!(zone_strings("v=DKIM1"), "\"v=DKIM1\"");
        let long = "x".repeat(300);
        let z = zone_strings(&long);
        assert!(z.starts_with("( \"") && z.ends_with("\" )"), "{z}");
        assert_eq!(z.matches('"').count(), 4);
    }
}
