"""Offline fixtures and the demo of hf_plugins: nothing here is part of the plugin itself.

* ``corpus``: CPython's ``pydoc_data.topics`` split into train/validation documents;
* ``tokenizer``: a byte-level BPE tokenizer trained on it (cached on disk);
* ``tiny_models``: tiny causal LMs built from configs (stand-ins for hub checkpoints);
* ``instruction_data``: an instruction-style split of the corpus for distillation runs;
* ``supervised``: supervised fine-tuning on completion tokens (teacher SFT, student initialisation);
* ``evaluation``: ROUGE-L of sampled completions and teacher-forced KL / NLL;
* ``demo``: ``python -m hf_plugins demo``.

The top-level names ``hf_plugins.load_pydoc_corpus``, ``train_bpe_tokenizer``, ``tiny_causal_lm``,
``CorpusSplit`` and ``TINY_SIZES`` come from here.
"""
