"""Pre-training objectives: one file each (mlm, sentence_pairs, clm, electra) behind the `Objective`
protocol (base.py) and a registry by kind (registry.py); the reference functions they use are
masking (MLM), segments (NSP/SOP pairs) and packing (RoBERTa full sentences, GPT blocks)."""
