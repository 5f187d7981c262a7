rule render:
    """The held-out test split re-synthesised from its own audio (comparable with ground truth)."""
    input:
        model="results/{subject}/train/model.pt",
        index="results/{subject}/warp/index.json",
        shards="results/{subject}/warp/shards",
        frames="results/{subject}/resample/frames.mkv",
        meta="results/{subject}/resample/meta.json",
        audio="results/{subject}/resample/audio.wav",
        source=subject_video,
        code=module("render"),
    output:
        video="results/{subject}/video.mp4",
        figures="results/{subject}/video.json",
    log:
        "logs/{subject}/render.log",
    benchmark:
        "benchmarks/{subject}/render.tsv"
    params:
        cfg=params_json("render"),
        driving="",  # the test split's own audio
    conda:
        "../envs/speech2lip.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "python -m speech2lip render --model {input.model:q} --index {input.index:q}"
        " --frames {input.frames:q} --meta {input.meta:q} --audio {input.audio:q}"
        " --video {output.video:q} --figures {output.figures:q} --source {input.source:q}"
        "{params.driving} --params {params.cfg:q} --threads {threads} > {log:q} 2>&1"


use rule render as render_driven with:
    input:
        **rules.render.input,
        driving=driving_audio,
    output:
        video="results/{subject}/driven/{name}.mp4",
        figures="results/{subject}/driven/{name}.json",
    log:
        "logs/{subject}/render_driven_{name}.log",
    benchmark:
        "benchmarks/{subject}/render_driven_{name}.tsv"
    params:
        cfg=params_json("render"),
        driving=lambda wildcards, input: f" --driving {shlex.quote(input.driving)}",
