# One image for every component of a lab (dnsserver, registrar, endpoint) and for its supervisor;
# compose.yaml ('siplab compose') says which one each service runs. The project is installed
# from wheels: those in build/wheels when present (made on the host with 'pip wheel', for a
# build with no registry in reach — CI's), else built here from the source.
ARG BASE=python:3.12-slim

FROM ${BASE} AS wheels
# Pure Python: the image has no compiler, and a lab in containers runs at a lab's rates.
ENV SIPLAB_COMPILE=0
COPY . /src
RUN mkdir /wheels \
 && if ls /src/build/wheels/*.whl >/dev/null 2>&1; then cp /src/build/wheels/*.whl /wheels/; \
    else python3 -m venv /tmp/venv && /tmp/venv/bin/pip wheel --quiet --wheel-dir /wheels /src; fi

FROM ${BASE}
COPY --from=wheels /wheels /wheels
# /run/siplab holds the lab's shared token (a volume takes this mode): any service's user may
# create it, as in /tmp, since the supervisor runs as the host user who reads its state file.
RUN python3 -m venv /opt/siplab \
 && /opt/siplab/bin/pip install --quiet --no-cache-dir --no-index --find-links /wheels siplab \
 && rm -rf /wheels \
 && useradd --uid 1000 --user-group --no-create-home --shell /usr/sbin/nologin siplab \
 && mkdir -m 1777 /run/siplab
ENV PATH=/opt/siplab/bin:$PATH PYTHONUNBUFFERED=1
USER siplab
ENTRYPOINT ["python", "-m", "emulator.lab.container"]
