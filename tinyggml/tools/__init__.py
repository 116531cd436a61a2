"""The tools around the runtime: the command line (cli), converting Hugging Face checkpoints
(convert, convert_vocab), quantizing GGUF files (quantize, kquants), benchmarks (bench),
perplexity, and random models of real sizes (make_model, testing)."""
