rule resample:
    """Any source video -> 25 fps lossless frames, 16 kHz mono audio and meta.json."""
    input:
        video=subject_video,
        code=module("resample"),
    output:
        frames="results/{subject}/resample/frames.mkv",
        audio="results/{subject}/resample/audio.wav",
        meta="results/{subject}/resample/meta.json",
    log:
        "logs/{subject}/resample.log",
    benchmark:
        "benchmarks/{subject}/resample.tsv"
    params:
        cfg=params_json("resample"),
        out_dir=subpath(output.meta, parent=True),
    conda:
        "../envs/speech2lip.yaml"
    threads: 2
    resources:
        mem_mb=3000,
        runtime=60,
    shell:
        "python -m speech2lip resample --video {input.video:q} --out-dir {params.out_dir:q}"
        " --params {params.cfg:q} > {log:q} 2>&1"
