"""THE list of concurry 0.13.2 tests the alias suite does not run: tests of concurry's
internals (its own future classes, internal limit-set and algorithm classes, private helpers,
``_impl`` attributes), and of the parts of concurry outside the worker-pool API this package
does not provide (``global_config``/``temp_config``, ``Timer``). Keys are paths relative to the
suite's ``tests/`` folder: a folder, a file, or one test (``file::Class::test``, every
parametrization); values the reason.

The per-test entries were found by reading each test for the internal names it uses
(``alias.INTERNALS``, ``_impl``, ``params_signature``, private attributes)."""

from __future__ import annotations

_WHOLE: dict[str, str] = {
    "core/future/": "concurry's own future classes (BaseFuture subclasses SyncFuture, ConcurrentFuture, "
    "AsyncioFuture, RayFuture and their conversions): futures here are concurrent.futures.Future",
    "core/retry/test_per_method_retry_helpers.py": "private helpers _get_user_defined_methods/_normalize_retry_param",
    "core/worker/test_proxy_no_defaults.py": "the signatures of concurry's per-mode proxy classes",
    "utils/test_timer.py": "concurry's Timer utility and its private formatting helpers (not part of the "
    "worker-pool API; not provided)",
    "test_global_config.py": "concurry's global_config/temp_config defaults system (not provided: defaults "
    "here are the options() defaults)",
    "core/worker/test_ray_task_worker.py": "Ray-only (runs with scripts/concurry-suite --ray)",
}

_TESTS: dict[str, list[str]] = {
    "concurry's internal LoadBalancer class": [
        "core/algorithms/test_load_balancing.py::TestRoundRobinBalancer::test_round_robin_selection",
        "core/algorithms/test_load_balancing.py::TestRoundRobinBalancer::test_round_robin_with_single_worker",
        "core/algorithms/test_load_balancing.py::TestRoundRobinBalancer::test_round_robin_stats",
        "core/algorithms/test_load_balancing.py::TestRoundRobinBalancer::test_round_robin_invalid_num_workers",
        "core/algorithms/test_load_balancing.py::TestRoundRobinBalancer::test_round_robin_with_offset",
        "core/algorithms/test_load_balancing.py::TestRoundRobinBalancer::test_round_robin_offset_stats",
        "core/algorithms/test_load_balancing.py::TestRoundRobinBalancer::test_round_robin_large_offset",
        "core/algorithms/test_load_balancing.py::TestLeastActiveLoadBalancer::test_least_active_selection",
        "core/algorithms/test_load_balancing.py::TestLeastActiveLoadBalancer::test_least_active_stats",
        "core/algorithms/test_load_balancing.py::TestLeastActiveLoadBalancer::test_least_active_record_complete_nonexistent",
        "core/algorithms/test_load_balancing.py::TestLeastTotalLoadBalancer::test_least_total_selection",
        "core/algorithms/test_load_balancing.py::TestLeastTotalLoadBalancer::test_least_total_stats",
        "core/algorithms/test_load_balancing.py::TestLeastTotalLoadBalancer::test_least_total_no_reset_on_complete",
        "core/algorithms/test_load_balancing.py::TestRandomBalancer::test_random_selection_in_range",
        "core/algorithms/test_load_balancing.py::TestRandomBalancer::test_random_selection_distribution",
        "core/algorithms/test_load_balancing.py::TestRandomBalancer::test_random_stats",
        "core/algorithms/test_load_balancing.py::TestLoadBalancerFactory::test_factory_creates_correct_types",
        "core/algorithms/test_load_balancing.py::TestLoadBalancerFactory::test_factory_invalid_algorithm",
        "core/algorithms/test_load_balancing.py::TestThreadSafety::test_round_robin_thread_safety",
        "core/algorithms/test_load_balancing.py::TestThreadSafety::test_least_active_thread_safety",
    ],
    "concurry's internal Poller class and global_config polling tables": [
        "core/algorithms/test_polling.py::TestFixedPollingStrategy::test_initialization_defaults",
        "core/algorithms/test_polling.py::TestFixedPollingStrategy::test_initialization_custom",
        "core/algorithms/test_polling.py::TestFixedPollingStrategy::test_get_next_interval",
        "core/algorithms/test_polling.py::TestFixedPollingStrategy::test_record_completion_no_change",
        "core/algorithms/test_polling.py::TestFixedPollingStrategy::test_record_no_completion_no_change",
        "core/algorithms/test_polling.py::TestFixedPollingStrategy::test_reset_no_effect",
        "core/algorithms/test_polling.py::TestAdaptivePollingStrategy::test_initialization_defaults",
        "core/algorithms/test_polling.py::TestAdaptivePollingStrategy::test_record_completion_speeds_up",
        "core/algorithms/test_polling.py::TestAdaptivePollingStrategy::test_record_completion_respects_min",
        "core/algorithms/test_polling.py::TestAdaptivePollingStrategy::test_record_no_completion_slows_down",
        "core/algorithms/test_polling.py::TestAdaptivePollingStrategy::test_record_no_completion_respects_max",
        "core/algorithms/test_polling.py::TestAdaptivePollingStrategy::test_completion_resets_consecutive_empty",
        "core/algorithms/test_polling.py::TestAdaptivePollingStrategy::test_reset",
        "core/algorithms/test_polling.py::TestExponentialPollingStrategy::test_initialization_defaults",
        "core/algorithms/test_polling.py::TestExponentialPollingStrategy::test_record_completion_resets",
        "core/algorithms/test_polling.py::TestExponentialPollingStrategy::test_record_no_completion_exponential_growth",
        "core/algorithms/test_polling.py::TestExponentialPollingStrategy::test_record_no_completion_respects_max",
        "core/algorithms/test_polling.py::TestExponentialPollingStrategy::test_reset",
        "core/algorithms/test_polling.py::TestProgressivePollingStrategy::test_initialization_defaults",
        "core/algorithms/test_polling.py::TestProgressivePollingStrategy::test_record_completion_resets_to_fastest",
        "core/algorithms/test_polling.py::TestProgressivePollingStrategy::test_record_no_completion_progresses_levels",
        "core/algorithms/test_polling.py::TestProgressivePollingStrategy::test_record_no_completion_stays_at_max",
        "core/algorithms/test_polling.py::TestProgressivePollingStrategy::test_get_next_interval_returns_correct_level",
        "core/algorithms/test_polling.py::TestProgressivePollingStrategy::test_reset",
        "core/algorithms/test_polling.py::TestCreatePollingStrategy::test_create_fixed_enum",
        "core/algorithms/test_polling.py::TestCreatePollingStrategy::test_create_fixed_string",
        "core/algorithms/test_polling.py::TestCreatePollingStrategy::test_create_adaptive_enum",
        "core/algorithms/test_polling.py::TestCreatePollingStrategy::test_create_adaptive_string",
        "core/algorithms/test_polling.py::TestCreatePollingStrategy::test_create_exponential_enum",
        "core/algorithms/test_polling.py::TestCreatePollingStrategy::test_create_exponential_string",
        "core/algorithms/test_polling.py::TestCreatePollingStrategy::test_create_progressive_enum",
        "core/algorithms/test_polling.py::TestCreatePollingStrategy::test_create_progressive_string",
        "core/algorithms/test_polling.py::TestCreatePollingStrategy::test_create_with_kwargs",
        "core/algorithms/test_polling.py::TestCreatePollingStrategy::test_create_adaptive_with_custom_params",
        "core/algorithms/test_polling.py::TestCreatePollingStrategy::test_create_invalid_algorithm",
        "core/algorithms/test_polling.py::TestPollingBehavior::test_adaptive_converges",
        "core/algorithms/test_polling.py::TestPollingBehavior::test_exponential_backoff_pattern",
        "core/algorithms/test_polling.py::TestPollingBehavior::test_progressive_level_progression",
    ],
    "concurry's internal RateLimiter class": [
        "core/algorithms/test_rate_limiting_algorithms.py::TestTokenBucketLimiter::test_token_bucket_creation",
        "core/algorithms/test_rate_limiting_algorithms.py::TestTokenBucketLimiter::test_token_bucket_try_acquire_success",
        "core/algorithms/test_rate_limiting_algorithms.py::TestTokenBucketLimiter::test_token_bucket_try_acquire_failure",
        "core/algorithms/test_rate_limiting_algorithms.py::TestTokenBucketLimiter::test_token_bucket_burst_handling",
        "core/algorithms/test_rate_limiting_algorithms.py::TestTokenBucketLimiter::test_token_bucket_refill_over_time",
        "core/algorithms/test_rate_limiting_algorithms.py::TestTokenBucketLimiter::test_token_bucket_acquire_blocking",
        "core/algorithms/test_rate_limiting_algorithms.py::TestTokenBucketLimiter::test_token_bucket_acquire_timeout",
        "core/algorithms/test_rate_limiting_algorithms.py::TestTokenBucketLimiter::test_token_bucket_stats",
        "core/algorithms/test_rate_limiting_algorithms.py::TestTokenBucketLimiter::test_token_bucket_stats_after_usage",
        "core/algorithms/test_rate_limiting_algorithms.py::TestTokenBucketLimiter::test_token_bucket_partial_refill",
        "core/algorithms/test_rate_limiting_algorithms.py::TestLeakyBucketLimiter::test_leaky_bucket_creation",
        "core/algorithms/test_rate_limiting_algorithms.py::TestLeakyBucketLimiter::test_leaky_bucket_try_acquire_success",
        "core/algorithms/test_rate_limiting_algorithms.py::TestLeakyBucketLimiter::test_leaky_bucket_try_acquire_failure",
        "core/algorithms/test_rate_limiting_algorithms.py::TestLeakyBucketLimiter::test_leaky_bucket_queue_capacity",
        "core/algorithms/test_rate_limiting_algorithms.py::TestLeakyBucketLimiter::test_leaky_bucket_leak_over_time",
        "core/algorithms/test_rate_limiting_algorithms.py::TestLeakyBucketLimiter::test_leaky_bucket_acquire_blocking",
        "core/algorithms/test_rate_limiting_algorithms.py::TestLeakyBucketLimiter::test_leaky_bucket_acquire_timeout",
        "core/algorithms/test_rate_limiting_algorithms.py::TestLeakyBucketLimiter::test_leaky_bucket_stats",
        "core/algorithms/test_rate_limiting_algorithms.py::TestLeakyBucketLimiter::test_leaky_bucket_stats_after_usage",
        "core/algorithms/test_rate_limiting_algorithms.py::TestSlidingWindowLimiter::test_sliding_window_creation",
        "core/algorithms/test_rate_limiting_algorithms.py::TestSlidingWindowLimiter::test_sliding_window_try_acquire_success",
        "core/algorithms/test_rate_limiting_algorithms.py::TestSlidingWindowLimiter::test_sliding_window_try_acquire_failure",
        "core/algorithms/test_rate_limiting_algorithms.py::TestSlidingWindowLimiter::test_sliding_window_cleanup_old_requests",
        "core/algorithms/test_rate_limiting_algorithms.py::TestSlidingWindowLimiter::test_sliding_window_rolling_behavior",
        "core/algorithms/test_rate_limiting_algorithms.py::TestSlidingWindowLimiter::test_sliding_window_acquire_blocking",
        "core/algorithms/test_rate_limiting_algorithms.py::TestSlidingWindowLimiter::test_sliding_window_acquire_timeout",
        "core/algorithms/test_rate_limiting_algorithms.py::TestSlidingWindowLimiter::test_sliding_window_stats",
        "core/algorithms/test_rate_limiting_algorithms.py::TestSlidingWindowLimiter::test_sliding_window_stats_after_usage",
        "core/algorithms/test_rate_limiting_algorithms.py::TestFixedWindowLimiter::test_fixed_window_creation",
        "core/algorithms/test_rate_limiting_algorithms.py::TestFixedWindowLimiter::test_fixed_window_try_acquire_success",
        "core/algorithms/test_rate_limiting_algorithms.py::TestFixedWindowLimiter::test_fixed_window_try_acquire_failure",
        "core/algorithms/test_rate_limiting_algorithms.py::TestFixedWindowLimiter::test_fixed_window_reset",
        "core/algorithms/test_rate_limiting_algorithms.py::TestFixedWindowLimiter::test_fixed_window_boundary_behavior",
        "core/algorithms/test_rate_limiting_algorithms.py::TestFixedWindowLimiter::test_fixed_window_acquire_blocking",
        "core/algorithms/test_rate_limiting_algorithms.py::TestFixedWindowLimiter::test_fixed_window_acquire_timeout",
        "core/algorithms/test_rate_limiting_algorithms.py::TestFixedWindowLimiter::test_fixed_window_stats",
        "core/algorithms/test_rate_limiting_algorithms.py::TestFixedWindowLimiter::test_fixed_window_stats_after_usage",
        "core/algorithms/test_rate_limiting_algorithms.py::TestGCRALimiter::test_gcra_creation",
        "core/algorithms/test_rate_limiting_algorithms.py::TestGCRALimiter::test_gcra_try_acquire_success",
        "core/algorithms/test_rate_limiting_algorithms.py::TestGCRALimiter::test_gcra_try_acquire_failure",
        "core/algorithms/test_rate_limiting_algorithms.py::TestGCRALimiter::test_gcra_burst_handling",
        "core/algorithms/test_rate_limiting_algorithms.py::TestGCRALimiter::test_gcra_replenishment_over_time",
        "core/algorithms/test_rate_limiting_algorithms.py::TestGCRALimiter::test_gcra_acquire_blocking",
        "core/algorithms/test_rate_limiting_algorithms.py::TestGCRALimiter::test_gcra_acquire_timeout",
        "core/algorithms/test_rate_limiting_algorithms.py::TestGCRALimiter::test_gcra_stats",
        "core/algorithms/test_rate_limiting_algorithms.py::TestGCRALimiter::test_gcra_stats_after_usage",
        "core/algorithms/test_rate_limiting_algorithms.py::TestGCRALimiter::test_gcra_precision",
        "core/algorithms/test_rate_limiting_algorithms.py::TestGCRALimiter::test_gcra_vs_token_bucket_burst",
        "core/algorithms/test_rate_limiting_algorithms.py::TestGCRALimiter::test_gcra_multiple_small_requests",
        "core/algorithms/test_rate_limiting_algorithms.py::TestGCRALimiter::test_gcra_fractional_tokens",
        "core/algorithms/test_rate_limiting_algorithms.py::TestGCRALimiter::test_gcra_zero_rate",
        "core/algorithms/test_rate_limiting_algorithms.py::TestGCRALimiter::test_gcra_tat_tracking",
    ],
    "concurry's internal MultiprocessSharedLimitSet/NoOpLimitSet classes": [
        "core/limit/test_async_acquire.py::TestAsyncAcquireNoOpLimitSet::test_noop_async_acquire_succeeds_immediately",
        "core/limit/test_async_acquire.py::TestAsyncAcquireDirectImplementations::test_multiprocess_shared_limitset_async_acquire",
        "core/limit/test_async_acquire.py::TestAsyncAcquireDirectImplementations::test_multiprocess_shared_limitset_async_acquire_timeout",
    ],
    "RateLimit._impl (the internal rate limiter) or params_signature()": [
        "core/limit/test_limit.py::TestLimitThreadSafety::test_ratelimit_not_thread_safe",
        "core/limit/test_float_capacity.py::TestParamsSignatureStability::test_integral_capacity_no_decimal",
        "core/limit/test_float_capacity.py::TestParamsSignatureStability::test_integral_float_capacity_no_decimal",
        "core/limit/test_float_capacity.py::TestParamsSignatureStability::test_fractional_capacity_preserved",
        "core/limit/test_float_capacity.py::TestParamsSignatureStability::test_inf_capacity_serializes",
        "core/limit/test_float_capacity.py::TestFloatCapacityWithBucketAlgorithms::test_acquire_full_capacity_at_once",
        "core/limit/test_float_capacity.py::TestFloatCapacityWithBucketAlgorithms::test_acquire_more_than_capacity_fails",
        "core/limit/test_float_capacity.py::TestFloatCapacityWithBucketAlgorithms::test_token_bucket_fractional_refund",
        "core/limit/test_float_capacity.py::TestFloatCapacityWithBucketAlgorithms::test_gcra_fractional_acquire",
        "core/limit/test_float_capacity.py::TestCountingAlgorithmsRejectFractionalTokens::test_integer_tokens_still_work",
        "core/limit/test_float_capacity.py::TestCountingAlgorithmsRejectFractionalTokens::test_integer_valued_float_tokens_work",
        "core/limit/test_float_capacity.py::TestCountingAlgorithmsRejectFractionalTokens::test_fractional_tokens_rejected",
        "core/limit/test_float_capacity.py::TestCountingAlgorithmsRejectFractionalTokens::test_fractional_can_acquire_rejected",
        "core/limit/test_float_capacity.py::TestIEEESurprises::test_classic_0_1_plus_0_2",
        "core/limit/test_float_capacity.py::TestIEEESurprises::test_subnormal_capacity",
    ],
    "which internal limit-set class LimitSet() returns, or its private _limits_by_key/_lock": [
        "core/limit/test_limit_set.py::TestLimitSet::test_limit_set_creation",
        "core/limit/test_limit_set.py::TestLimitSetSharedModes::test_limitset_default_not_shared",
        "core/limit/test_limit_set.py::TestLimitSetSharedModes::test_limitset_non_shared_must_be_sync",
        "core/limit/test_limit_set.py::TestLimitSetSharedModes::test_limitset_shared_sync_mode",
        "core/limit/test_limit_set.py::TestLimitSetSharedModes::test_limitset_shared_process_mode",
        "core/limit/test_limit_set.py::TestLimitSetSharedModes::test_limitset_thread_safety_non_shared",
        "core/limit/test_limit_set.py::TestLimitSetSharedModes::test_limitset_acquire_works_across_modes",
    ],
    "the internal BaseLimitSet class": [
        "core/limit/test_shared_limits.py::TestLimitValidation::test_list_of_limits_creates_appropriate_limitset",
    ],
    "the internal helpers calculate_retry_wait/execute_with_retry or global_config": [
        "core/retry/test_retry.py::TestRetryConfig::test_default_config",
        "core/retry/test_retry.py::TestCalculateRetryWait::test_linear_strategy",
        "core/retry/test_retry.py::TestCalculateRetryWait::test_exponential_strategy",
        "core/retry/test_retry.py::TestCalculateRetryWait::test_fibonacci_strategy",
        "core/retry/test_retry.py::TestCalculateRetryWait::test_jitter_applied",
        "core/retry/test_retry.py::TestCalculateRetryWait::test_jitter_zero",
        "core/retry/test_retry.py::TestExecuteWithRetry::test_success_no_retry",
        "core/retry/test_retry.py::TestExecuteWithRetry::test_retry_on_exception",
        "core/retry/test_retry.py::TestExecuteWithRetry::test_retry_exhaustion",
        "core/retry/test_retry.py::TestExecuteWithRetry::test_retry_on_specific_exception_only",
        "core/retry/test_retry.py::TestExecuteWithRetry::test_retry_with_callable_filter",
        "core/retry/test_retry.py::TestExecuteWithRetry::test_retry_until_validation",
        "core/retry/test_retry.py::TestExecuteWithRetry::test_retry_until_exhaustion",
        "core/retry/test_retry.py::TestExecuteWithRetry::test_retry_until_multiple_validators",
        "core/retry/test_retry.py::TestExecuteWithRetry::test_context_passed_to_filters",
    ],
    "concurry's Ray context helpers (RayContext, ray_context)": [
        "utils/test_progress.py::test_progress_bar_with_ray",
        "utils/test_progress.py::test_progress_bar_with_ray_parallel",
    ],
    "the class hierarchy of concurry's proxies (morphic Typed) or their private _stopped attribute": [
        "core/worker/test_pydantic_integration.py::TestWorkerProxyTypedValidation::test_different_proxy_types_all_use_typed",
        "core/worker/test_pydantic_integration.py::TestWorkerProxyTypedValidation::test_private_attribute_type_checking",
    ],
}

EXCLUDED: dict[str, str] = {**_WHOLE, **{test: reason for reason, tests in _TESTS.items() for test in tests}}


def excluded(relative_nodeid: str) -> str | None:
    """The reason ``relative_nodeid`` (``core/x.py::Class::test[param]``) is excluded, if it is."""
    base = relative_nodeid.split("[", 1)[0]
    for key, reason in EXCLUDED.items():
        if key.endswith("/") and base.startswith(key):
            return reason
        if key.endswith(".py") and (base == key or base.startswith(key + "::")):
            return reason
        if base == key:
            return reason
    return None
