# The two set-up commands of the README. Both install what is missing first (scripts/bootstrap.sh).
.PHONY: run test

run:  ## everything locally: Kafka (KRaft), schema registry, topics, simulator feeding live events
	bash scripts/bootstrap.sh run
	.venv/bin/jamsostek run

test:  ## the test suite against a real broker, registry and PostgreSQL
	bash scripts/test.sh $(PYTEST_ARGS)
