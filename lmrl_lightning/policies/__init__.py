from lmrl_lightning.policies.rerank import RerankPolicy, candidate_logprobs
from lmrl_lightning.policies.sampling import LMPolicy, row_uniform, sample_from_logits

__all__ = ["LMPolicy", "RerankPolicy", "candidate_logprobs", "row_uniform", "sample_from_logits"]
