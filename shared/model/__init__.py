"""Model side of Eureka: Qwen2.5-VL loading/saving, the project tokenizer, prompts, log-probs, images, cache."""
