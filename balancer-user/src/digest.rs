//! The digest of a service's compiled tables (`status`: `digest`): SHA-256 of everything
//! the image puts in the data plane, so two hosts show the same digest exactly when their
//! tables pick the same backends for every flow.

use sha2::{Digest as _, Sha256};

use crate::dataplane::ServiceImage;

/// `sha256:` and the hex SHA-256 of `image`'s fields in a fixed order (little-endian).
pub fn digest(image: &ServiceImage) -> String {
    let mut hash = Sha256::new();
    hash.update(image.ring_size.to_le_bytes());
    hash.update(image.flags.to_le_bytes());
    hash.update(image.seed.to_le_bytes());
    hash.update((image.cells.len() as u64).to_le_bytes());
    hash.update(&image.cells);
    hash.update((image.rings.len() as u64).to_le_bytes());
    for ring in &image.rings {
        hash.update((ring.len() as u64).to_le_bytes());
        ring.iter().for_each(|slot| hash.update(slot.to_le_bytes()));
    }
    hash.update((image.client_pins.len() as u64).to_le_bytes());
    for pin in &image.client_pins {
        hash.update([pin.family, pin.prefix_len]);
        hash.update(pin.addr);
        hash.update(pin.group.to_le_bytes());
    }
    let hex: String = hash
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile::compile, state::tests::sample};

    #[test]
    fn equal_tables_have_equal_digests_and_any_difference_shows() {
        let state = sample();
        let web = state.service("web").unwrap();
        let down = Default::default();
        let a = compile(web, 7, &down).unwrap().image;
        let b = compile(web, 7, &down).unwrap().image;
        assert_eq!(digest(&a), digest(&b));
        assert!(digest(&a).starts_with("sha256:"));
        assert_eq!(digest(&a).len(), "sha256:".len() + 64);
        let other_seed = compile(web, 8, &down).unwrap().image;
        assert_ne!(digest(&a), digest(&other_seed));
        let mut moved = a.clone();
        moved.rings[0][0] ^= 1;
        assert_ne!(digest(&a), digest(&moved));
        let mut cells = a.clone();
        cells.cells[0] ^= 1;
        assert_ne!(digest(&a), digest(&cells));
    }
}
