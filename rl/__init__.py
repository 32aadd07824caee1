"""The training half: critic prompts, verifiable rewards, the GRPO recipe, evaluation."""
