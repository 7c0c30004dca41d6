import os


def test_offline_variables_are_set_for_the_whole_session():
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        assert os.environ[name] == "1"
    assert "distill-plugins-tests-" in os.environ["HF_HOME"]


def test_hub_download_fails_offline():
    import pytest
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    with pytest.raises((OfflineModeIsEnabled, LocalEntryNotFoundError, OSError)):
        hf_hub_download("gpt2", "config.json")
