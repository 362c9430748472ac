//! Weight shards: a package's constants split into files of at most [`SHARD_BYTES`] at
//! tensor boundaries (in the index's order, which is the plan's), each tensor 256-byte
//! aligned inside its file, so that a browser fetches and uploads them one file, one tensor
//! at a time (`templates/package/src/weights.ts`, `streamWeights`), hosts that cap file
//! sizes serve them, and HTTP caches hold them. A tensor larger than a shard gets a file of
//! its own.

use crate::PackageError;

/// The largest weight file of a package (64 MiB: under the file limits of common hosts
/// and CDNs, and a bounded amount of JavaScript memory while one arrives).
pub const SHARD_BYTES: usize = 64 << 20;

const ALIGN: usize = 256;

/// Splits `bin` as indexed by `json` (constants.json: entries with `offset` and `bytes`)
/// into shards of at most `max` bytes; returns the new index (each entry with its `file`
/// and its offset in that file) and the files, named `constants-NNNNN.bin`.
pub fn shard(
    json: &[u8],
    bin: &[u8],
    max: usize,
) -> Result<(Vec<u8>, Vec<(String, Vec<u8>)>), PackageError> {
    let bad = |m: String| PackageError::Input(format!("constants.json: {m}"));
    let mut index: Vec<serde_json::Value> =
        serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for e in index.iter_mut() {
        let field = |k: &str| {
            e[k].as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("an entry without {k}: {e}")))
        };
        let (offset, bytes) = (field("offset")?, field("bytes")?);
        let data = bin
            .get(offset..offset + bytes)
            .ok_or_else(|| bad(format!("{} lies past constants.bin's end", e["name"])))?;
        let fits = files
            .last()
            .is_some_and(|(_, f)| f.len().div_ceil(ALIGN) * ALIGN + bytes <= max);
        if !fits {
            files.push((format!("constants-{:05}.bin", files.len()), Vec::new()));
        }
        let (name, file) = files.last_mut().expect("one file at least");
        let at = file.len().div_ceil(ALIGN) * ALIGN;
        file.resize(at, 0);
        file.extend_from_slice(data);
        e["file"] = name.clone().into();
        e["offset"] = at.into();
    }
    let json = serde_json::to_string_pretty(&index).expect("index serialises") + "\n";
    Ok((json.into_bytes(), files))
}

/// A short identity of a package's weights (the first 16 hex digits of the SHA-256 of the
/// given parts: index and bytes): `weights.ts` keeps them in the Cache API under it, so
/// a rebuilt package with other weights never reads the old ones.
pub fn weights_id(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::shard;

    #[test]
    fn every_tensor_lands_whole_in_one_shard_under_the_cap() {
        // Five tensors of 100..500 bytes, laid out as the engine lays them (256-aligned).
        let mut bin = Vec::new();
        let mut index = Vec::new();
        for k in 0..5usize {
            let at = bin.len().div_ceil(256) * 256;
            bin.resize(at, 0);
            let bytes: Vec<u8> = (0..(k + 1) * 100).map(|i| (i * 7 + k) as u8).collect();
            index.push(serde_json::json!({"name": format!("t{k}"), "dt": "u8", "shape": [bytes.len()], "offset": at, "bytes": bytes.len()}));
            bin.extend_from_slice(&bytes);
        }
        let json = serde_json::to_vec(&index).unwrap();
        let (new_json, files) = shard(&json, &bin, 700).unwrap();
        let new_index: Vec<serde_json::Value> = serde_json::from_slice(&new_json).unwrap();
        assert!(files.len() >= 3, "{} files", files.len());
        for (_, f) in &files {
            assert!(
                f.len() <= 700 || f.len() == 500,
                "a file of {} bytes",
                f.len()
            );
        }
        for (old, new) in index.iter().zip(&new_index) {
            let (o, b) = (
                old["offset"].as_u64().unwrap() as usize,
                old["bytes"].as_u64().unwrap() as usize,
            );
            let file = &files
                .iter()
                .find(|(n, _)| n == new["file"].as_str().unwrap())
                .unwrap()
                .1;
            let at = new["offset"].as_u64().unwrap() as usize;
            assert_eq!(at % 256, 0);
            assert_eq!(&file[at..at + b], &bin[o..o + b], "{}", old["name"]);
        }
        // An index that points past the blob is refused, not sliced.
        let bad = serde_json::to_vec(&[
            serde_json::json!({"name": "x", "offset": 0, "bytes": bin.len() + 1}),
        ])
        .unwrap();
        assert!(shard(&bad, &bin, 700).is_err());
    }
}
