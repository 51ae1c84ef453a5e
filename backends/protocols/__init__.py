"""The client's side of each wire protocol: a request body that forces the output length where the API allows,
and a streaming parser with one interface (sse.EventParser: feed(line) -> tokens carried). openai.py speaks
OpenAI completions and chat; native.py the frameworks' own TGI, LightLLM and Triton APIs. Name -> protocol is
backends/registry.py's protocol_for."""
