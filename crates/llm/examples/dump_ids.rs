//! Prints the token ids of a text file as JSON (a parity-check helper).
fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 3, "usage: dump_ids MODEL TEXT");
    let m = ferrite_llm::load_model(args[1].as_ref(), ferrite_llm::ComputeDType::Quantized)?;
    let text = std::fs::read_to_string(&args[2])?;
    println!("{}", serde_json::to_string(&m.tokenizer.encode(&text)?)?);
    Ok(())
}
