# The two set-up commands of the README. Both install what is missing first (scripts/bootstrap.sh).
.PHONY: run test unit bench

run:  ## everything locally: Kafka (KRaft), schema registry, topics, simulator feeding live events
	bash scripts/bootstrap.sh run
	.venv/bin/jamsostek run

test:  ## the test suite against a real broker, registry and PostgreSQL
	bash scripts/test.sh $(PYTEST_ARGS)

unit:  ## the fast tier: every test that needs no broker, registry or PostgreSQL (seconds)
	bash scripts/test.sh -m unit

bench:  ## the benchmark: ours vs the raw ceiling vs Quix Streams, 1M events (BENCH_ARGS="--events 200000", "--quick")
	bash scripts/bootstrap.sh test
	.venv/bin/python -m benchmarks $(BENCH_ARGS)
