//! Byte-level BPE tokenizer built from GGUF metadata (`tokenizer.ggml.*`) or loaded from an HF
//! `tokenizer.json`, plus the ChatML chat template and streaming detokenisation.

use crate::gguf::{value_to_u64, GgufFile};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::Value;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::AddedToken;

/// The model's tokenizer and its special tokens.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Tokens that end a generation (EOS, `<|im_end|>`).
    pub stop_ids: Vec<u32>,
    /// Default system prompt of the chat template, when it has one.
    pub default_system: Option<String>,
}

/// GGUF token types (llama.cpp `llama_token_type`): control and user-defined tokens are matched
/// whole in the input, like HF's added tokens.
const TOKEN_TYPE_CONTROL: u64 = 3;
const TOKEN_TYPE_USER_DEFINED: u64 = 4;

fn string_array(v: &Value, key: &str) -> Result<Vec<String>> {
    v.to_vec()
        .map_err(|_| anyhow!("`{key}` is not an array"))?
        .iter()
        .map(|s| {
            s.to_string()
                .cloned()
                .map_err(|_| anyhow!("`{key}` holds a non-string"))
        })
        .collect()
}

/// The pre-tokenizer llama.cpp names `pre`, as the matching HF `tokenizer.json` defines it.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    let byte_level = ByteLevel::new(false, true, true);
    Ok(match pre {
        // SmolLM: every digit is its own pre-token, then GPT-2's byte-level split.
        "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
        "gpt2" | "default" => byte_level.into(),
        other => bail!("unsupported pre-tokenizer `{other}` (supported: smollm, gpt2)"),
    })
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's metadata.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let meta = |k: &str| {
            gguf.meta(k)
                .with_context(|| format!("GGUF metadata lacks `{k}`"))
        };
        let model = meta("tokenizer.ggml.model")?.to_string()?.clone();
        if model != "gpt2" {
            bail!("unsupported tokenizer model `{model}` (ferrite reads byte-level BPE, `gpt2`)");
        }
        let tokens = string_array(meta("tokenizer.ggml.tokens")?, "tokenizer.ggml.tokens")?;
        let merges = string_array(meta("tokenizer.ggml.merges")?, "tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| anyhow!("malformed merge `{m}`"))
            })
            .collect::<Result<Vec<_>>>()?;
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| anyhow!("building BPE: {e}"))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let pre = gguf
            .meta("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_else(|| "gpt2".into());
        inner.with_pre_tokenizer(Some(pre_tokenizer(&pre)?));
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        let mut specials = Vec::new();
        if let Some(types) = gguf.meta("tokenizer.ggml.token_type") {
            for (id, ty) in types.to_vec()?.iter().enumerate() {
                let ty = value_to_u64(ty)?;
                if ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED {
                    specials.push(AddedToken::from(tokens[id].clone(), true));
                }
            }
        }
        inner
            .add_special_tokens(specials)
            .map_err(|e| anyhow!("adding special tokens: {e}"))?;

        let mut stop_ids = Vec::new();
        if let Some(eos) = gguf.meta("tokenizer.ggml.eos_token_id") {
            stop_ids.push(value_to_u64(eos)? as u32);
        }
        let template = gguf
            .meta("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok().cloned());
        Ok(Self::finish(inner, stop_ids, template.as_deref()))
    }

    /// Loads an HF `tokenizer.json` (with `tokenizer_config.json` beside it when present).
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| anyhow!("cannot load {}: {e}", path.display()))?;
        let config: Option<serde_json::Value> =
            std::fs::read_to_string(dir.join("tokenizer_config.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
        let mut stop_ids = Vec::new();
        if let Some(eos) = config
            .as_ref()
            .and_then(|c| c.get("eos_token"))
            .and_then(|e| e.as_str())
            .and_then(|e| inner.token_to_id(e))
        {
            stop_ids.push(eos);
        }
        let template = config
            .as_ref()
            .and_then(|c| c.get("chat_template"))
            .and_then(|t| t.as_str().map(str::to_owned));
        Ok(Self::finish(inner, stop_ids, template.as_deref()))
    }

    fn finish(
        inner: tokenizers::Tokenizer,
        mut stop_ids: Vec<u32>,
        template: Option<&str>,
    ) -> Self {
        for t in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>"] {
            if let Some(id) = inner.token_to_id(t) {
                if !stop_ids.contains(&id) {
                    stop_ids.push(id);
                }
            }
        }
        Self {
            inner,
            stop_ids,
            default_system: template.and_then(default_system_prompt),
        }
    }

    /// Token ids of `text`, without BOS/EOS (special tokens written in the text are matched).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("tokenizing: {e}"))?
            .get_ids()
            .to_vec())
    }

    /// Text of `ids` (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| anyhow!("detokenizing: {e}"))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Writes the tokenizer as an HF `tokenizer.json`.
    pub fn save_json(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, false)
            .map_err(|e| anyhow!("writing {}: {e}", path.display()))
    }

    /// The id of a token string.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

/// The system prompt a ChatML Jinja template inserts when the conversation has none
/// (SmolLM2's "You are a helpful AI assistant named SmolLM, ...").
fn default_system_prompt(template: &str) -> Option<String> {
    let start = template.find("<|im_start|>system\\n")? + "<|im_start|>system\\n".len();
    let rest = &template[start..];
    let end = rest.find("<|im_end|>")?;
    Some(rest[..end].to_string())
}

/// One turn of a conversation.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// Renders messages in ChatML and opens the assistant's turn.
pub fn chatml_prompt(messages: &[Message]) -> String {
    let mut s = String::new();
    for m in messages {
        s.push_str(&format!(
            "<|im_start|>{}\n{}<|im_end|>\n",
            m.role, m.content
        ));
    }
    s.push_str("<|im_start|>assistant\n");
    s
}

/// Turns a stream of token ids into text pieces, holding back bytes of incomplete UTF-8
/// characters until they are complete.
pub struct TextStreamer<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    emitted: usize,
}

impl<'a> TextStreamer<'a> {
    /// A streamer over `tokenizer`.
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        Self {
            tokenizer,
            ids: Vec::new(),
            emitted: 0,
        }
    }

    /// Adds a token; returns the newly completed text, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') || text.len() <= self.emitted {
            return Ok(None);
        }
        let piece = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(Some(piece))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_layout() {
        let p = chatml_prompt(&[Message {
            role: "user".into(),
            content: "Hi".into(),
        }]);
        assert_eq!(p, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn default_system_from_jinja() {
        let t = "{{ '<|im_start|>system\\nYou are SmolLM<|im_end|>\\n' }}";
        assert_eq!(default_system_prompt(t).as_deref(), Some("You are SmolLM"));
        assert_eq!(default_system_prompt("{{ messages }}"), None);
    }
}
