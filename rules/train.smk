rule train:
    """Lip model, learned canonical depth and Blend-Net; resumable (checkpoints in train/ckpt)."""
    input:
        index="results/{subject}/warp/index.json",
        shards="results/{subject}/warp/shards",
        expert="results/{subject}/sync_expert/expert.pt",
        audio="results/{subject}/resample/audio.wav",
        code=module("train"),
    output:
        model="results/{subject}/train/model.pt",
        summary="results/{subject}/train/train.json",
        loss_curve="results/{subject}/train/loss_curve.png",
    log:
        "logs/{subject}/train.log",
    benchmark:
        "benchmarks/{subject}/train.tsv"
    params:
        cfg=params_json("train"),
        out_dir=subpath(output.model, parent=True),
    conda:
        "../envs/speech2lip.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=720,
    shell:
        "python -m speech2lip train --index {input.index:q} --out-dir {params.out_dir:q} --params {params.cfg:q}"
        " --expert {input.expert:q} --audio {input.audio:q} --threads {threads} --resume auto"
        " > {log:q} 2>&1"
