//! `ferrite chat`: multi-round chat on stdin. The conversation lives in the KV cache: each turn
//! feeds only its new tokens, so the history is never re-encoded.

use crate::commands::generate::SamplingArgs;
use crate::common::ModelArgs;
use crate::kv_spec;
use anyhow::Result;
use clap::Args;
use ferrite_llm::generate::{generate, StopReason};
use ferrite_llm::tokenizer::{chatml_prompt, Message};
use std::io::{BufRead, Write};

/// Flags of `ferrite chat`.
#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// System prompt (default: the chat template's own, if it has one).
    #[arg(long)]
    system: Option<String>,
}

/// Reads one user message per line until EOF; prints each reply as it is generated.
pub fn run(args: ChatArgs) -> Result<()> {
    let mut sampler = args.sampling.sampler()?;
    let m = args.model.load()?;
    let mut cache = kv_spec::build(&args.sampling.kv, &m.model.kv_geometry())?;
    let system = args.system.or(m.tokenizer.default_system.clone());
    let mut first = true;
    // Tokens that close the previous assistant turn, fed with the next user turn.
    let mut pending: Vec<u32> = Vec::new();
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    loop {
        if interactive {
            print!("> ");
            out.flush()?;
        }
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        let mut messages = Vec::new();
        if first {
            if let Some(s) = &system {
                messages.push(Message {
                    role: "system".into(),
                    content: s.clone(),
                });
            }
        }
        messages.push(Message {
            role: "user".into(),
            content: line.to_string(),
        });
        let mut prompt = std::mem::take(&mut pending);
        prompt.extend(m.tokenizer.encode(&chatml_prompt(&messages))?);
        if let Some(left) = cache.remaining() {
            if prompt.len() + 1 >= left {
                eprintln!(
                    "error: the context is full ({} of {} tokens used); start a new chat or stream with --kv sink:4+2044",
                    cache.len(),
                    cache.capacity()
                );
                std::process::exit(1);
            }
        }
        first = false;
        let g = generate(
            &m.model,
            &m.tokenizer,
            cache.as_mut(),
            &prompt,
            args.sampling.max_tokens,
            &mut sampler,
            &mut |piece| {
                print!("{piece}");
                let _ = std::io::stdout().flush();
            },
        )?;
        println!();
        // The last sampled token was never fed: close the turn before the next one.
        pending = g.closing_tokens(&m.tokenizer)?;
        if g.stop_reason == StopReason::ContextFull {
            eprintln!(
                "error: the context is full ({} tokens); start a new chat or stream with --kv sink:4+2044",
                cache.len()
            );
            std::process::exit(1);
        }
        eprintln!(
            "[{} tokens at {:.1} tok/s, KV cache {} tokens, {} bytes]",
            g.tokens.len(),
            g.decode_tps(),
            cache.len(),
            cache.heap_bytes()
        );
    }
    Ok(())
}
