rule sync_expert:
    """Lip-sync expert: a user's Wav2Lip checkpoint or one trained on the subject; checked on GT."""
    input:
        index="results/{subject}/warp/index.json",
        shards="results/{subject}/warp/shards",
        code=module("sync_expert"),
    output:
        expert="results/{subject}/sync_expert/expert.pt",
        summary="results/{subject}/sync_expert/sync_expert.json",
        curve="results/{subject}/sync_expert/offset_curve.png",
    log:
        "logs/{subject}/sync_expert.log",
    benchmark:
        "benchmarks/{subject}/sync_expert.tsv"
    params:
        cfg=params_json("sync_expert"),
        out_dir=subpath(output.expert, parent=True),
    conda:
        "../envs/speech2lip.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=240,
    shell:
        "python -m speech2lip sync_expert --index {input.index:q} --out-dir {params.out_dir:q}"
        " --params {params.cfg:q} --threads {threads} > {log:q} 2>&1"
