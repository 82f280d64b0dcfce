"""The loop controller: feedback -> dataset -> LoRA -> eval -> gate -> canary -> promote."""
