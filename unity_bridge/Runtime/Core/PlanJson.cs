using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text;

namespace LpmNpc.Core
{
    /// <summary>
    /// Writes recorded client messages as JSON (proto field names), so a test can replay exactly the
    /// sequence the bridge produces against the real sidecar. No JSON library needed.
    /// </summary>
    public static class PlanJson
    {
        public static string Write(IList<PlannedMsg> items, IDictionary<string, double> marks)
        {
            var sb = new StringBuilder();
            sb.Append("{\n\"marks\": {");
            bool first = true;
            if (marks != null)
                foreach (var kv in marks)
                {
                    sb.Append(first ? "" : ", ").Append(Str(kv.Key)).Append(": ").Append(Num(kv.Value));
                    first = false;
                }
            sb.Append("},\n\"messages\": [\n");
            for (int i = 0; i < items.Count; i++)
            {
                sb.Append("  {\"t\": ").Append(Num(items[i].At));
                if (items[i].Note != null) sb.Append(", \"note\": ").Append(Str(items[i].Note));
                sb.Append(", ").Append(Msg(items[i].Msg)).Append(i + 1 < items.Count ? "},\n" : "}\n");
            }
            sb.Append("]\n}\n");
            return sb.ToString();
        }

        public static string Msg(ClientMsg m)
        {
            switch (m.Kind)
            {
                case ClientMsgKind.Config:
                {
                    var c = m.Config;
                    var s = "\"config\": {\"character_id\": " + Str(c.CharacterId) + ", \"fps\": " + c.Fps +
                            ", \"width\": " + c.Width + ", \"height\": " + c.Height + ", \"pixel_format\": " + (int)c.PixelFormat +
                            ", \"flip_y\": " + Bool(c.FlipY) + ", \"alpha_matte\": " + Bool(c.AlphaMatte) +
                            ", \"jpeg_quality\": " + c.JpegQuality + ", \"send_rig\": " + Bool(c.SendRig) +
                            ", \"stats_interval_ms\": " + c.StatsIntervalMs + ", \"npc_sample_rate\": " + c.NpcSampleRate +
                            ", \"resume_token\": " + Str(c.ResumeToken);
                    if (c.LookaheadMs.HasValue) s += ", \"lookahead_ms\": " + c.LookaheadMs.Value;
                    return s + "}";
                }
                case ClientMsgKind.Audio:
                {
                    var a = m.Audio;
                    var s = "\"audio\": {\"channel\": " + (int)a.Channel + ", \"sample_rate\": " + a.SampleRate +
                            ", \"num_channels\": " + a.NumChannels + ", \"text\": " + Str(a.Text) +
                            ", \"pcm\": \"" + Convert.ToBase64String(a.Pcm) + "\"";
                    if (a.SampleIndex.HasValue) s += ", \"sample_index\": " + a.SampleIndex.Value;
                    return s + "}";
                }
                case ClientMsgKind.State:
                {
                    var st = m.State;
                    return "\"state\": {\"phase\": " + (int)st.Phase + ", \"emotion\": " + (int)st.Emotion +
                           ", \"intensity\": " + Num(st.Intensity) + ", \"transition_ms\": " + st.TransitionMs +
                           ", \"direction\": " + Str(st.Direction) + "}";
                }
                default:
                {
                    var c = m.Control;
                    return "\"control\": {\"action\": " + (int)c.Action + ", \"width\": " + c.Width +
                           ", \"height\": " + c.Height + ", \"fps\": " + c.Fps + "}";
                }
            }
        }

        private static string Num(double v) { return v.ToString("R", CultureInfo.InvariantCulture); }

        private static string Bool(bool b) { return b ? "true" : "false"; }

        public static string Str(string s)
        {
            var sb = new StringBuilder("\"");
            foreach (char ch in s ?? "")
            {
                switch (ch)
                {
                    case '"': sb.Append("\\\""); break;
                    case '\\': sb.Append("\\\\"); break;
                    case '\n': sb.Append("\\n"); break;
                    case '\r': sb.Append("\\r"); break;
                    case '\t': sb.Append("\\t"); break;
                    default:
                        if (ch < 0x20) sb.Append("\\u").Append(((int)ch).ToString("x4"));
                        else sb.Append(ch);
                        break;
                }
            }
            return sb.Append('"').ToString();
        }
    }
}
