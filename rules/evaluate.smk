rule evaluate:
    """Metrics of the test split (ours, ground truth, two baselines) and driven videos; report."""
    input:
        model="results/{subject}/train/model.pt",
        summary="results/{subject}/train/train.json",
        index="results/{subject}/warp/index.json",
        shards="results/{subject}/warp/shards",
        frames="results/{subject}/resample/frames.mkv",
        meta="results/{subject}/resample/meta.json",
        audio="results/{subject}/resample/audio.wav",
        video="results/{subject}/video.mp4",
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
        train_dir=subpath(input.summary, parent=True),
        expert_dir=subpath(input.expert, parent=True),
        out_dir=subpath(output.metrics, parent=True),
    conda:
        "../envs/speech2lip.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=120,
    shell:
        "python -m speech2lip evaluate {input.model:q} {input.index:q} {input.frames:q}"
        " {input.meta:q} {input.audio:q} {input.video:q} {params.train_dir:q}"
        " {params.expert_dir:q} {params.out_dir:q} --driven {input.driven:q}"
        " --source {input.source:q} --params {params.cfg:q} --threads {threads} > {log:q} 2>&1"
