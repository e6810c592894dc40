"""Pre-training objectives: masking (MLM), sentence pairs (NSP/SOP), packing (RoBERTa, GPT)."""
