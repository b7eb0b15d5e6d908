"""The frozen batch norm gives tf-slim's values and variable names."""

from __future__ import annotations

import numpy as np

from nips_adv.models.layers import slim_frozen_batch_norm


def test_frozen_batch_norm_matches_slim_fused_batch_norm() -> None:
    from nips_adv.models.tf_compat import slim, tf, tf1

    graph = tf.Graph()
    with graph.as_default():
        inputs = tf1.placeholder(tf.float32, [2, 9, 9, 8])
        ours = slim.conv2d(inputs, 4, 3, normalizer_fn=slim_frozen_batch_norm, normalizer_params={"epsilon": 1e-3, "scale": True}, scope="conv")
        reference = slim.conv2d(
            inputs, 4, 3, reuse=True, scope="conv", normalizer_fn=slim.batch_norm,
            normalizer_params={"epsilon": 1e-3, "scale": True, "is_training": False, "fused": True, "updates_collections": None},
        )
        names = sorted(variable.op.name for variable in tf1.global_variables())
        rng = np.random.default_rng(0)
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            for variable in tf1.global_variables():  # non-trivial statistics, so the test can fail
                shape = variable.shape.as_list()
                session.run(variable.assign(rng.uniform(0.5, 2.0, size=shape).astype(np.float32)))
            feed = {inputs: rng.standard_normal((2, 9, 9, 8)).astype(np.float32)}
            ours_value, reference_value = session.run([ours, reference], feed)
    assert names == [
        "conv/BatchNorm/beta", "conv/BatchNorm/gamma", "conv/BatchNorm/moving_mean",
        "conv/BatchNorm/moving_variance", "conv/weights",
    ]
    np.testing.assert_allclose(ours_value, reference_value, rtol=1e-5, atol=1e-5)
