rule sample:
    """The built-in synthetic demo subject: a real face photo saying espeak-ng speech."""
    input:
        code=module("sample"),
    output:
        video="data/sample/video.mp4",
    log:
        "logs/sample/sample.log",
    benchmark:
        "benchmarks/sample/sample.tsv"
    params:
        cfg=params_json("sample"),
    conda:
        "../envs/speech2lip.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m speech2lip sample --video {output.video:q} --params {params.cfg:q} > {log:q} 2>&1"
