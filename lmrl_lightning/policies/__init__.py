from lmrl_lightning.policies.decoding import DECODING_KINDS, Decoding, DecodingKind, as_decoding, build_policy
from lmrl_lightning.policies.rerank import RerankPolicy, candidate_logprobs, rerank_log_probs
from lmrl_lightning.policies.sampling import LMPolicy, row_uniform, sample_from_logits
from lmrl_lightning.policies.value_guided import ValueGuidance, ValueGuidedPolicy, ValueRerankPolicy

__all__ = [
    "DECODING_KINDS", "Decoding", "DecodingKind", "LMPolicy", "RerankPolicy", "ValueGuidance", "ValueGuidedPolicy",
    "ValueRerankPolicy", "as_decoding", "build_policy", "candidate_logprobs", "rerank_log_probs", "row_uniform",
    "sample_from_logits",
]
