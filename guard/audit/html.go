package audit

import (
	"encoding/json"
	"fmt"
	"io"
)

// WriteHTML writes a single self-contained HTML report: the data inline as
// JSON, plots drawn as inline SVG by an inline script, nothing fetched from
// the network. When the script has drawn every plot it sets
// data-rendered="N" on <body> (N plots) so tests and tools can tell.
func (r *Report) WriteHTML(w io.Writer) error {
	data, err := json.Marshal(r) // escapes <, > and & so it cannot end the script
	if err != nil {
		return fmt.Errorf("audit: encoding report: %w", err)
	}
	if _, err := fmt.Fprintf(w, htmlPage, data); err != nil {
		return fmt.Errorf("audit: writing HTML: %w", err)
	}
	return nil
}

const htmlPage = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'">
<title>dnsguard audit</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:left}
.weak{color:#b00;font-weight:bold}.random{color:#070}.insufficient{color:#777}
section{border-top:2px solid #444;margin-top:2em}svg{border:1px solid #ddd;margin:4px;background:#fcfcfc}
.plots{display:flex;flex-wrap:wrap}small{color:#666}
</style></head>
<body data-rendered="0">
<h1>dnsguard audit</h1>
<p id="summary"></p>
<table id="devices"><thead><tr><th>device</th><th>queries</th><th>names</th><th>TXID</th><th>bits</th><th>port</th><th>bits</th><th>EDNS</th><th>resolvers</th><th>Table I (dns port id cons)</th></tr></thead><tbody></tbody></table>
<div id="details"></div>
<script id="report-data" type="application/json">%s</script>
<script>
"use strict";
(function(){
const R = JSON.parse(document.getElementById("report-data").textContent);
const NS = "http://www.w3.org/2000/svg";
function el(tag, attrs, text){const e=document.createElement(tag);for(const k in attrs||{})e.setAttribute(k,attrs[k]);if(text!==undefined)e.textContent=text;return e;}
function svg(tag, attrs){const e=document.createElementNS(NS,tag);for(const k in attrs||{})e.setAttribute(k,attrs[k]);return e;}
const W=420,H=200,L=46,B=28,T=18;
function frame(title, xlabel, ylabel){
  const s=svg("svg",{width:W,height:H,viewBox:"0 0 "+W+" "+H,"class":"plot"});
  const t=svg("text",{x:W/2,y:13,"text-anchor":"middle","font-size":12});t.textContent=title;s.appendChild(t);
  s.appendChild(svg("line",{x1:L,y1:H-B,x2:W-6,y2:H-B,stroke:"#444"}));
  s.appendChild(svg("line",{x1:L,y1:T,x2:L,y2:H-B,stroke:"#444"}));
  const xl=svg("text",{x:(W+L)/2,y:H-6,"text-anchor":"middle","font-size":10});xl.textContent=xlabel;s.appendChild(xl);
  const yl=svg("text",{x:10,y:(H-B+T)/2,"font-size":10,transform:"rotate(-90 10 "+((H-B+T)/2)+")","text-anchor":"middle"});yl.textContent=ylabel;s.appendChild(yl);
  return s;
}
function tick(s,x,y,label,axis){const t=svg("text",{x:x,y:y,"font-size":9,"text-anchor":axis==="x"?"middle":"end"});t.textContent=label;s.appendChild(t);}
function bars(title,xlabel,values,labels){
  const s=frame(title,xlabel,"count");const n=Math.max(values.length,1),m=Math.max(1,...values);
  const bw=(W-L-8)/n;
  values.forEach((v,i)=>{const h=(H-B-T)*v/m;s.appendChild(svg("rect",{x:L+1+i*bw,y:H-B-h,width:Math.max(bw-1,1),height:h,fill:"#4a7ab5"}));
    if(labels&&(i%%Math.ceil(n/8)===0))tick(s,L+i*bw+bw/2,H-B+11,labels[i],"x");});
  tick(s,L-3,T+8,String(m),"y");return s;
}
function scatter(title,pts,key,maxT){
  const s=frame(title,"seconds since first query","value");const mt=Math.max(maxT,1e-9);
  for(const p of pts){s.appendChild(svg("circle",{cx:L+2+(W-L-10)*p.t/mt,cy:H-B-2-(H-B-T-4)*p[key]/65535,r:1.6,fill:key==="id"?"#b5504a":"#4a9b5a"}));}
  tick(s,L-3,T+8,"65535","y");tick(s,L-3,H-B,"0","y");tick(s,W-20,H-B+11,mt.toFixed(0)+"s","x");return s;
}
function verdict(f){const sp=el("span",{"class":f.verdict},f.verdict+(f.reason&&f.verdict!=="insufficient"?" ("+f.reason+")":""));sp.title=f.detail||"";return sp;}
let plots=0;
const tb=document.querySelector("#devices tbody");
const nf=R.files.length, nc=R.files.reduce((a,f)=>a+f.corrupt_packets,0);
document.getElementById("summary").textContent=R.devices.length+" devices, "+nf+" captures, "+nc+" corrupt packets skipped"+(R.network_resolvers&&R.network_resolvers.length?"; network resolvers: "+R.network_resolvers.join(", "):"");
for(const d of R.devices){
  const id=d.mac||d.ip;const tr=el("tr");
  const t=d.table_i;
  [id,d.queries,d.names.distinct].forEach(v=>tr.appendChild(el("td",{},String(v))));
  let td=el("td");td.appendChild(verdict(d.txid));tr.appendChild(td);tr.appendChild(el("td",{},d.txid.bits.toFixed(1)));
  td=el("td");td.appendChild(verdict(d.port));tr.appendChild(td);tr.appendChild(el("td",{},d.port.bits.toFixed(1)));
  tr.appendChild(el("td",{},(100*d.edns.share).toFixed(0)+"%%"));
  tr.appendChild(el("td",{},(d.resolvers||[]).map(r=>r.addr+(r.own_choice?"*":"")).join(", ")));
  tr.appendChild(el("td",{},[t.secure_dns,t.random_port,t.random_id,t.query_consistency].join(" ")));
  tb.appendChild(tr);
  const sec=el("section",{id:"dev-"+id});sec.appendChild(el("h2",{},id+(d.ips?" ("+d.ips.join(", ")+")":"")));
  if(d.queries===0){sec.appendChild(el("p",{},d.note||"no DNS queries seen"));document.getElementById("details").appendChild(sec);continue;}
  sec.appendChild(el("p",{},d.queries+" queries, "+d.responses+" answers, "+d.queries_per_minute+" per minute; "+d.names.distinct+" names; TTL re-asked early "+d.ttl.early_requeries+"/"+d.ttl.requeries+"; retransmissions "+d.retries.retransmissions+", retries "+d.retries.retries));
  sec.appendChild(el("p",{},"TXID: "+d.txid.detail));sec.appendChild(el("p",{},"port: "+d.port.detail));
  const box=el("div",{"class":"plots"});
  const ib=d.intervals.log2_ms_buckets||[];
  box.appendChild(bars("inter-query interval","interval (ms, log2 buckets)",ib,ib.map((_,i)=>i===0?"<1":String(Math.pow(2,i-1)))));plots++;
  const p=d.plot||{scatter:[],rate:[],rate_width_s:60};
  const maxT=p.scatter.reduce((a,q)=>Math.max(a,q.t),0);
  box.appendChild(scatter("transaction IDs over time",p.scatter,"id",maxT));plots++;
  box.appendChild(scatter("source ports over time",p.scatter,"port",maxT));plots++;
  box.appendChild(bars("queries per "+p.rate_width_s+" s","time",p.rate,p.rate.map((_,i)=>String(Math.round(i*p.rate_width_s))+"s")));plots++;
  sec.appendChild(box);
  const names=el("p");names.textContent="top names: "+d.names.top.map(n=>n.name+" ("+n.count+")").join(", ");sec.appendChild(names);
  document.getElementById("details").appendChild(sec);
}
document.body.setAttribute("data-rendered",String(plots));
document.body.appendChild(el("p",{id:"render-status"},"rendered "+plots+" plots"));
})();
</script>
</body></html>
`
