rule evaluate:
    """Metrics of the test split (ours, ground truth, two baselines) and driven videos; report."""
    input:
        model="results/{subject}/train/model.pt",
        loss_curve="results/{subject}/train/loss_curve.png",
        train_summary="results/{subject}/train/train.json",
        index="results/{subject}/warp/index.json",
        shards="results/{subject}/warp/shards",
        frames="results/{subject}/resample/frames.mkv",
        meta="results/{subject}/resample/meta.json",
        audio="results/{subject}/resample/audio.wav",
        video="results/{subject}/video.mp4",
        figures="results/{subject}/video.json",
        expert="results/{subject}/sync_expert/expert.pt",
        driven=driven_videos,
        source=subject_video,
        code=module("evaluate"),
    output:
        metrics="results/{subject}/evaluate/metrics.json",
        report="results/{subject}/evaluate/report.html",
    log:
        "logs/{subject}/evaluate.log",
    benchmark:
        "benchmarks/{subject}/evaluate.tsv"
    params:
        cfg=params_json("evaluate"),
        out_dir=subpath(output.metrics, parent=True),
    conda:
        "../envs/speech2lip.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=120,
    shell:
        "python -m speech2lip evaluate --model {input.model:q} --index {input.index:q}"
        " --frames {input.frames:q} --meta {input.meta:q} --audio {input.audio:q}"
        " --video {input.video:q} --figures {input.figures:q} --expert {input.expert:q}"
        " --loss-curve {input.loss_curve:q} --train-summary {input.train_summary:q}"
        " --out-dir {params.out_dir:q}"
        " --driven {input.driven:q} --source {input.source:q} --params {params.cfg:q}"
        " --threads {threads} > {log:q} 2>&1"
