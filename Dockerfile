# One image for every Airflow component and the MLflow server (docker-compose.yaml).
# torch is pinned in requirements.txt; the default Linux wheel of that version
# carries CUDA, which the airflow-worker-gpu service uses.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIRFLOW_HOME=/opt/airflow

# curl: the compose healthchecks
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --uid 50000 --create-home --home-dir /home/airflow airflow

WORKDIR /opt/airflow

# dependencies first: this layer is rebuilt only when requirements.txt changes
COPY requirements.txt ./
RUN pip install -r requirements.txt

# the mlsys package (and its `mlsys` command), without touching the pinned set
COPY pyproject.toml README.md ./
COPY include/ include/
RUN pip install --no-deps . && rm -rf build include/*.egg-info

COPY dags/ dags/
COPY plugins/ plugins/

# mount points of the named volumes: a fresh volume takes this owner
RUN mkdir -p mlsys logs auth data \
    && chown -R airflow /opt/airflow

USER airflow
EXPOSE 8080 5000
CMD ["airflow", "version"]
