"""The start-up check of engines with vision: the encoder's token counts against the API's rule."""

from __future__ import annotations

import pytest

from inference_worker.engines.vision_checks import check_feature_counts
from shared.image_tokens import FixedImageTokens, PatchGridImageTokens


@pytest.mark.parametrize("rule", [FixedImageTokens("<image>", 16), PatchGridImageTokens(14, 2, 3136, 12845056)])
def test_an_encoder_that_disagrees_with_the_rule_is_refused_at_start(rule):
    check_feature_counts(rule, lambda image: rule.feature_tokens(image.width, image.height))
    with pytest.raises(RuntimeError, match="not supported"):
        check_feature_counts(rule, lambda image: rule.feature_tokens(image.width, image.height) + 1)
