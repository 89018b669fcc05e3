# The Streamlit studio as a container: a Hugging Face Docker Space (README front matter
# `sdk: docker` and `app_port: 8501`) or any Docker host:
#
#   docker build -t image-studio .
#   docker run -p 8501:8501 -v image-studio-data:/data -e OPENAI_API_KEY=... image-studio
#
# The Gradio app needs no container: a Gradio Space runs gradio_app.py directly.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Spaces run the container as uid 1000; so does this image everywhere else.
RUN useradd --create-home --uid 1000 user \
 && mkdir -p /data \
 && chown user:user /data

WORKDIR /home/user/app

# Dependencies first, so code changes do not reinstall them. torch comes from the CPU index: the
# default wheel on PyPI bundles CUDA (several GB) that a CPU Space cannot use.
COPY --chown=user requirements.txt .
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install -r requirements.txt

COPY --chown=user . .

USER user
# All data under /data: a storage volume mounted there (a Space's persistent storage, or `-v` above)
# keeps the history, mood boards, jobs and downloaded local models across restarts. Without a volume
# /data is the container's own disk and is lost when it is rebuilt or restarted.
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    STUDIO_HOME=/data/image-studio \
    HF_HOME=/data/huggingface

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)" || exit 1

# On a Space the app lives in an iframe on huggingface.co, where browsers drop Streamlit's XSRF
# cookie and every upload fails with 403; there (only) XSRF protection is off unless set otherwise.
CMD ["sh", "-c", "if [ -n \"$SPACE_ID\" ]; then export STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION=\"${STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION:-false}\"; fi; exec streamlit run app.py --server.port=8501 --server.address=0.0.0.0"]
