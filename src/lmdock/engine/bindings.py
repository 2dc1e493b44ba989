"""The llama.cpp bindings the engine relies on, checked once at start-up.

llama-cpp-python tracks llama.cpp closely and signatures drift between releases (e.g. the penalties
sampler gained `n_vocab`). Checking names and argument counts up front turns a segfault or a confusing
TypeError deep in the engine into one clear message naming the binding.
"""

from __future__ import annotations

import llama_cpp

from lmdock.core.errors import ModelLoadError

# name -> number of C arguments
REQUIRED_BINDINGS: dict[str, int] = {
    "llama_backend_init": 0,
    "llama_model_default_params": 0,
    "llama_context_default_params": 0,
    "llama_model_load_from_file": 2,
    "llama_model_free": 1,
    "llama_model_get_vocab": 1,
    "llama_model_n_ctx_train": 1,
    "llama_model_chat_template": 2,
    "llama_model_meta_val_str": 4,
    "llama_model_size": 1,
    "llama_model_n_params": 1,
    "llama_init_from_model": 2,
    "llama_free": 1,
    "llama_n_ctx": 1,
    "llama_get_memory": 1,
    "llama_memory_clear": 2,
    "llama_memory_seq_rm": 4,
    "llama_memory_seq_cp": 5,
    "llama_memory_seq_pos_max": 2,
    "llama_memory_seq_pos_min": 2,
    "llama_state_seq_get_size": 2,
    "llama_state_seq_get_data": 4,
    "llama_state_seq_set_data": 4,
    "llama_state_seq_save_file": 5,
    "llama_state_seq_load_file": 6,
    "llama_batch_init": 3,
    "llama_batch_free": 1,
    "llama_decode": 2,
    "llama_get_logits_ith": 2,
    "llama_vocab_n_tokens": 1,
    "llama_vocab_is_eog": 2,
    "llama_vocab_bos": 1,
    "llama_vocab_eos": 1,
    "llama_vocab_get_add_bos": 1,
    "llama_tokenize": 7,
    "llama_token_to_piece": 6,
    "llama_sampler_chain_default_params": 0,
    "llama_sampler_chain_init": 1,
    "llama_sampler_chain_add": 2,
    "llama_sampler_free": 1,
    "llama_sampler_sample": 3,
    "llama_sampler_accept": 2,
    "llama_sampler_init_greedy": 0,
    "llama_sampler_init_dist": 1,
    "llama_sampler_init_top_k": 1,
    "llama_sampler_init_top_p": 2,
    "llama_sampler_init_min_p": 2,
    "llama_sampler_init_temp": 1,
    "llama_sampler_init_penalties": 5,
    # embeddings
    "llama_get_embeddings_seq": 2,
    "llama_model_n_embd": 1,
    "llama_encode": 2,
    "llama_model_has_encoder": 1,
    "llama_model_has_decoder": 1,
}


def check_bindings() -> None:
    """Raise ModelLoadError naming the first binding that is missing or has an unexpected signature."""
    for name, n_args in REQUIRED_BINDINGS.items():
        fn = getattr(llama_cpp, name, None)
        if fn is None:
            raise ModelLoadError(
                f"llama-cpp-python {llama_cpp.__version__} lacks `{name}`; lmdock needs llama-cpp-python==0.3.36"
            )
        argtypes = getattr(fn, "argtypes", None)
        if argtypes is not None and len(argtypes) != n_args:
            raise ModelLoadError(
                f"llama-cpp-python {llama_cpp.__version__}: `{name}` takes {len(argtypes)} arguments, "
                f"lmdock expects {n_args}; install llama-cpp-python==0.3.36"
            )
