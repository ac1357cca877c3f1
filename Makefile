# The two commands a new user needs: `make up` (run the stack) and `make test` (run every test).
# Both install what is missing and build the images first; see README.md.

.PHONY: up test images down clean ps logs fuzz

# One clock for the progress lines of every script a target runs.
export SCRIPT_T0 := $(shell date +%s)

## Build what is missing, start the whole stack, and wait until every container is healthy.
up: images
	bash scripts/up.sh

## Run every test: unit, process and container tests (cargo test over the workspace).
test: images
	bash scripts/test.sh

## Tools, base images, secrets and the stack's images (idempotent; reuses what exists).
images:
	bash scripts/secrets.sh
	bash scripts/build-images.sh

## Run every fuzz target for 10 minutes (make test runs them for 20 s).
fuzz:
	SECONDS_PER_TARGET=600 bash scripts/fuzz.sh

## The failover demo (docs/demo.md): faults on each component under load, the table, and
## dist/demo-timeline.svg. Needs the stack up. DEMO_ARGS="--faults kill,pause,partition".
.PHONY: demo
demo:
	bash scripts/demo.sh

## Rolling deploy without downtime: recreate web-a, web-b, lb-1, lb-2 one at a time from the
## current images (make images first), draining each first. SERVICES="web-b lb-2" for others.
.PHONY: deploy
deploy:
	bash scripts/deploy.sh

## Stop the stack; data volumes are kept.
down:
	docker compose down

## Stop the stack and delete its data volumes.
clean:
	docker compose down --volumes --remove-orphans

ps:
	docker compose ps

logs:
	docker compose logs --follow --tail 50

## The stack on Docker Swarm (issue 18; README: "Outgrowing one machine"): a one-node swarm
## when the engine is in none, the stack `foobar` from docker/swarm/stack.yml, healthy.
.PHONY: swarm-up swarm-deploy swarm-demo swarm-down swarm-test
swarm-up: images
	bash scripts/swarm.sh up

## Roll the swarm's web and balancer services to the images `make images` built, health-gated.
swarm-deploy: images
	bash scripts/swarm.sh deploy

## The failover demo on the swarm (docs/swarm.md): a task of each service killed under load,
## the engine's new one waited for; the same table and checks as make demo. DEMO_ARGS too.
swarm-demo:
	bash scripts/demo.sh --swarm

## Remove the stack and its volumes; leave the swarm if swarm-up made it.
swarm-down:
	bash scripts/swarm.sh down --volumes

## The swarm tests alone (make test runs them too, after the compose stack tests).
swarm-test: images
	cargo test --release --locked -p foobar-stack-tests --test swarm -- --nocapture
