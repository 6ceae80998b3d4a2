//! Each daemon's record under `PREFIX/hosts/NAME` (JSON of [`FleetHost`]), renewed every
//! second under its lease: what `balancer fleet status` lists.

use crate::api::FleetHost;

use super::FleetError;

/// The record of a host.
pub fn encode(host: &FleetHost) -> Vec<u8> {
    serde_json::to_vec(host).expect("a host record serialises")
}

/// The hosts of stored `records`, by name; a record that does not read is one line of
/// error.
pub fn decode(records: &[Vec<u8>]) -> Result<Vec<FleetHost>, FleetError> {
    let mut hosts = records
        .iter()
        .map(|record| {
            serde_json::from_slice::<FleetHost>(record).map_err(|e| FleetError::Unusable {
                revision: 0,
                why: format!("a host record is not one: {e}"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    hosts.sort_by(|a, b| a.host.cmp(&b.host));
    Ok(hosts)
}

/// This daemon's host name: the kernel's (`gethostname`), as `--host-name` defaults to.
pub fn system_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the kernel writes a NUL-terminated name.
    let done = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if done != 0 {
        return "localhost".into();
    }
    let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_by_name_and_a_bad_one_is_one_line() {
        let host = |name: &str| FleetHost {
            host: name.into(),
            revision: 4,
            digests: [("web".to_string(), "sha256:00".to_string())].into(),
            seen_ms: 1000,
            left: false,
            sync: Some("198.18.1.1:7070".parse().unwrap()),
        };
        let records = vec![encode(&host("lb-2")), encode(&host("lb-1"))];
        assert_eq!(decode(&records).unwrap(), vec![host("lb-1"), host("lb-2")]);
        let err = decode(&[b"{}".to_vec()]).unwrap_err().to_string();
        assert!(err.contains("a host record is not one"), "{err}");
        assert_eq!(err.lines().count(), 1);
        assert!(!system_name().is_empty());
    }
}
